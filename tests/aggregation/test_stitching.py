"""Identity stitching (B5): visitors who give one email share one profile and its content."""

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command

from aggregation.imports import visitor_id_for
from aggregation.models import ImportMapping, Profile, VisitorLink, VisitorSeparation
from aggregation.records import record_new
from aggregation.services import spool_consolidate
from aggregation.services.imports import import_job_create, import_job_run
from aggregation.spool import spool_append, spool_seal_open
from delivery.identity import visitor_id_issue
from delivery.tables import local_tables
from segmentation.services import table_build
from tests.factories import AttachmentFactory, ClientFactory

pytestmark = pytest.mark.django_db

START = datetime(2026, 10, 1, tzinfo=UTC)


def _event(client_id, visitor_id, kind, day, **fields) -> dict:
    return record_new(
        client_id=client_id,
        kind=kind,
        visitor_id=visitor_id,
        session_id=f"s{day}",
        occurred_at=START + timedelta(days=day),
        **fields,
    )


def _load(records) -> None:
    spool_append(records)
    spool_seal_open()
    assert spool_consolidate().status == "done"


def test_two_devices_with_one_email_become_one_profile_and_one_answer():
    client = ClientFactory()
    laptop, phone = visitor_id_issue(), visitor_id_issue()
    _load([_event(client.pk, laptop, "page_view", 0)])
    _load([_event(client.pk, laptop, "purchase", 1, order_id="A", value="30.00",
                  email="Ann@Example.com")])  # fmt: skip
    _load([_event(client.pk, phone, "purchase", 5, order_id="B", value="20.00",
                  email="ann@example.com")])  # fmt: skip

    [profile] = Profile.objects.filter(client=client)
    assert (profile.visitor_id, profile.purchases, profile.total_spent) == (
        laptop, 2, Decimal("50.00"),
    )  # fmt: skip
    assert list(VisitorLink.objects.values_list("visitor_id", "canonical_id")) == [(phone, laptop)]

    attachment = AttachmentFactory(
        campaign__client=client, segment__rule={"field": "purchases", "op": "gte", "value": 2}
    )
    table_build(campaign_id=attachment.campaign_id)
    table = (
        local_tables().client(client.public_key).placements[attachment.campaign.placement.key].table
    )
    assert table.visitors == {laptop: attachment.content_id, phone: attachment.content_id}


def test_an_imported_customer_joins_the_visitor_with_their_email(tmp_path):
    client = ClientFactory()
    shopper = visitor_id_issue()
    _load([_event(client.pk, shopper, "purchase", 3, order_id="W1", value="10.00",
                  email="bob@example.com")])  # fmt: skip
    mapping = ImportMapping.objects.create(
        client=client, name="old", columns={"customer_id": "id", "email": "email",
        "order_id": "order", "order_date": "date", "order_total": "total"},
    )  # fmt: skip
    data = b"id,email,order,date,total\nK7,bob@example.com,L1,2024-01-05,99.00\n"
    job = import_job_create(
        mapping=mapping, file_name="old.csv", source=io.BytesIO(data), enqueue=False
    )
    import_job_run(job_id=job.pk)
    spool_consolidate()

    imported = visitor_id_for(client.pk, "K7")
    [profile] = Profile.objects.filter(client=client)
    # The imported customer was seen first (2024), so their id holds the joined profile.
    assert (profile.visitor_id, profile.purchases, profile.total_spent) == (
        imported, 2, Decimal("109.00"),
    )  # fmt: skip
    assert list(VisitorLink.objects.values_list("visitor_id", "canonical_id")) == [
        (shopper, imported)
    ]


def test_rebuilding_from_events_keeps_the_joined_profiles():
    client = ClientFactory()
    first, second = visitor_id_issue(), visitor_id_issue()
    _load([_event(client.pk, first, "purchase", 0, order_id="1", value="5.00", email="c@x.io")])
    _load([_event(client.pk, second, "purchase", 2, order_id="2", value="7.00", email="c@x.io")])
    before = list(Profile.objects.values_list("visitor_id", "purchases", "total_spent"))

    call_command("rebuild_profiles")

    assert list(Profile.objects.values_list("visitor_id", "purchases", "total_spent")) == before
    assert before == [(first, 2, Decimal("12.00"))]


def test_a_shared_or_placeholder_address_joins_nobody():
    client = ClientFactory()
    crowd = [visitor_id_issue() for _ in range(21)]
    _load([_event(client.pk, v, "purchase", n, order_id=f"k{n}", value="1.00",
                  email="kiosk@shop.example") for n, v in enumerate(crowd)])  # fmt: skip
    _load([_event(client.pk, visitor_id_issue(), "purchase", n, order_id=f"p{n}", value="1.00",
                  email="none@shop.example") for n in range(2)])  # fmt: skip

    assert VisitorLink.objects.count() == 0
    assert Profile.objects.filter(client=client).count() == 23


def test_a_marketer_separates_a_wrong_join_in_the_console(client, client_a, marketer):
    from django.urls import reverse

    first, second = visitor_id_issue(), visitor_id_issue()
    _load([_event(client_a.pk, first, "purchase", 0, order_id="1", value="5.00", email="s@x.io")])
    _load([_event(client_a.pk, second, "purchase", 2, order_id="2", value="7.00", email="s@x.io")])
    link = VisitorLink.objects.get()

    response = client.post(
        reverse("admin:aggregation_visitorlink_changelist"),
        {"action": "separate", "_selected_action": [link.pk]},
    )

    assert response.status_code == 302
    assert VisitorLink.objects.count() == 0
    assert dict(Profile.objects.values_list("visitor_id", "total_spent")) == {
        first: Decimal("5.00"),
        second: Decimal("7.00"),
    }
    # The same address again later: the separated visitor stays apart.
    _load([_event(client_a.pk, second, "purchase", 4, order_id="3", value="1.00", email="S@x.io")])
    assert VisitorLink.objects.count() == 0
    assert dict(Profile.objects.values_list("visitor_id", "total_spent")) == {
        first: Decimal("5.00"),
        second: Decimal("8.00"),
    }
    assert list(VisitorSeparation.objects.values_list("visitor_id", "email")) == [
        (second, "s@x.io")
    ]


def test_a_separated_visitor_stays_apart_through_a_later_alias(client_a):
    from aggregation.services.identities import identities_separate

    first, second, third = visitor_id_issue(), visitor_id_issue(), visitor_id_issue()
    _load([_event(client_a.pk, first, "purchase", 0, order_id="1", value="5.00", email="x@x.io")])
    _load([_event(client_a.pk, second, "purchase", 2, order_id="2", value="7.00", email="x@x.io")])
    identities_separate(links=list(VisitorLink.objects.all()))
    # A third browser joins the separated visitor under another address, then gives the
    # first address: the separated visitor's group must not join the first visitor.
    _load([_event(client_a.pk, third, "purchase", 4, order_id="3", value="1.00", email="y@y.io")])
    _load([_event(client_a.pk, second, "purchase", 5, order_id="4", value="1.00", email="y@y.io")])
    _load([_event(client_a.pk, third, "purchase", 6, order_id="5", value="1.00", email="x@x.io")])

    canonicals = set(VisitorLink.objects.values_list("canonical_id", flat=True))
    assert first not in canonicals
    assert not VisitorLink.objects.filter(visitor_id=first).exists()
