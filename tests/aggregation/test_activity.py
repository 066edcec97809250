"""Reviewing activity by criteria over a period (S1)."""

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.urls import reverse

from aggregation.models import Event
from aggregation.selectors import activity_summary
from tests.factories import ProfileFactory, UserFactory

pytestmark = pytest.mark.django_db


def _event(client, visitor_id, kind, day, hour=12, **fields):
    Event.objects.create(
        client=client,
        event_id=uuid.uuid4(),
        visitor_id=visitor_id,
        type=kind,
        occurred_at=datetime(2026, 10, day, hour, tzinfo=UTC),
        received_at=datetime(2026, 10, day, hour, tzinfo=UTC),
        **fields,
    )


@pytest.fixture
def shop(client_a, client_b):
    ProfileFactory(client=client_a, visitor_id="big-spender", source="search")
    ProfileFactory(client=client_a, visitor_id="one-order", source="email")
    ProfileFactory(client=client_a, visitor_id="browser", source="direct")
    for session in ("s1", "s2", "s3"):
        _event(client_a, "big-spender", "page_view", 2, session_id=session)
    _event(client_a, "big-spender", "purchase", 2, session_id="s1", order_id="a", value=200)
    _event(client_a, "big-spender", "purchase", 2, session_id="s1", order_id="a", value=200)
    _event(client_a, "big-spender", "purchase", 3, session_id="s2", order_id="b", value=100)
    _event(client_a, "one-order", "purchase", 3, session_id="t", order_id="c", value="20.50")
    _event(client_a, "browser", "page_view", 3, session_id="u")
    _event(client_a, "browser", "delivery", 1)  # deliveries are not activity
    _event(client_a, "browser", "page_view", 9)  # after the period
    _event(client_b, "rival", "purchase", 2, order_id="x", value=999)
    return client_a


def test_the_summary_sorts_visitors_by_what_they_did(shop):
    summary = activity_summary(client_id=shop.pk, first=date(2026, 10, 1), last=date(2026, 10, 3))

    assert summary["totals"] == {
        "visitors": 3,
        "purchasers": 2,
        "orders": 3,
        "revenue": Decimal("320.50"),
        "visits": 5,
    }
    assert summary["purchasers"] == [("purchasers", 2), ("non-purchasers", 1)]
    assert summary["orders"] == [("none", 1), ("1", 1), ("2", 1), ("3 or more", 0)]
    assert summary["spent"] == [
        ("nothing", 1),
        ("under $50", 1),
        ("$50-$99", 0),
        ("$100-$249", 0),
        ("$250 or more", 1),
    ]
    assert summary["visits"] == [("1", 2), ("2", 0), ("3-5", 1), ("6 or more", 0)]
    assert summary["sources"] == [
        ("Direct", 1),
        ("Referral", 0),
        ("Search engine", 1),
        ("Campaign", 0),
        ("Email", 1),
    ]
    assert [(day["day"].day, day["visitors"], day["purchases"]) for day in summary["daily"]] == [
        (1, 0, 0),
        (2, 1, 2),
        (3, 3, 2),
    ]


def test_a_member_reviews_their_own_clients_activity(client, viewer, shop):
    page = client.get(
        reverse("admin:aggregation-activity"), {"first": "2026-10-01", "last": "2026-10-03"}
    )

    assert page.status_code == 200
    totals = page.context["summary"]["totals"]
    assert (totals["visitors"], totals["revenue"]) == (3, Decimal("320.50"))
    assert "Activity of Alpha Shop" in page.content.decode()


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"first": "2026-10-05", "last": "2026-10-01"}, "The first day is after the last."),
        ({"first": "2025-01-01", "last": "2026-10-01"}, "At most 366 days at a time."),
        ({"first": "yesterday"}, "Enter a valid date."),
    ],
)
def test_a_bad_period_is_named(client, viewer, shop, query, error):
    page = client.get(reverse("admin:aggregation-activity"), query)

    assert page.status_code == 200
    assert page.context["summary"] is None
    assert error in page.content.decode()


def test_a_superuser_chooses_the_client_and_outsiders_are_refused(client, superuser, shop):
    first = client.get(reverse("admin:aggregation-activity"))
    chosen = client.get(reverse("admin:aggregation-activity"), {"client": shop.pk})
    client.logout()
    client.force_login(UserFactory())  # staff, no client
    refused = client.get(reverse("admin:aggregation-activity"))

    assert (first.status_code, first.context["summary"]) == (200, None)
    assert chosen.context["summary"] is not None
    assert refused.status_code == 403
