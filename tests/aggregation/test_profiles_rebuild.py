"""Profiles updated file by file at consolidation equal a rebuild from all events (A5)."""

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection
from django.forms.models import model_to_dict

from aggregation.models import Profile
from aggregation.records import record_new
from aggregation.services import spool_consolidate
from aggregation.spool import spool_append, spool_seal_open
from delivery.identity import visitor_id_issue
from delivery.models import Visitor
from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db

START = datetime(2026, 9, 1, tzinfo=UTC)
KINDS = [
    "page_view",
    "product_view",
    "category_view",
    "cart_add",
    "cart_remove",
    "purchase",
    "custom",
]


def _event(rng, client_id, visitor_id, moment) -> dict:
    kind = rng.choice(KINDS)
    bought = kind == "purchase"
    return record_new(
        client_id=client_id,
        kind=kind,
        visitor_id=visitor_id,
        session_id=f"s{rng.randrange(4)}",
        occurred_at=moment,
        url=rng.choice(["https://shop.example/", "https://shop.example/?utm_medium=email"]),
        referrer=rng.choice(["", "https://www.google.com/", "https://blog.example/"]),
        product_id=rng.choice(["driver", "putter", "balls"]),
        category=rng.choice(["", "clubs", "balls"]),
        order_id=f"o{rng.randrange(3)}" if bought else "",
        value=str(Decimal(rng.randrange(1000, 50000)) / 100) if bought else None,
        currency="USD" if bought else "",
        email=rng.choice(["", f"{visitor_id[:8].lower()}@example.com"]),
        properties={"tier": rng.choice(["gold", "silver"]), "name": "x"}
        if kind == "custom"
        else {},
    )


def test_consolidated_profiles_equal_a_rebuild_from_events():
    rng = random.Random(3)
    client = ClientFactory()
    visitors = [visitor_id_issue() for _ in range(60)]
    # Five files, each touching visitors that earlier files touched too: incremental updates.
    for _ in range(5):
        spool_append(
            _event(
                rng, client.pk, rng.choice(visitors), START + timedelta(minutes=rng.randrange(9000))
            )
            for _ in range(400)
        )
        spool_seal_open()
        run = spool_consolidate()
        assert (run.status, run.error) == ("done", "")
    incremental = _snapshot(client)

    call_command("rebuild_profiles", client=client.pk)

    assert len(incremental) == 60
    assert _snapshot(client) == incremental
    assert any(profile["attributes"] for profile in incremental.values())
    assert any(profile["categories"] for profile in incremental.values())


def _snapshot(client) -> dict:
    return {
        # model_to_dict leaves out fields that are not editable: the kept tally.
        profile.visitor_id: model_to_dict(profile, exclude=["id", "updated_at"])
        | {"tally": profile.tally}
        for profile in Profile.objects.filter(client=client)
    }


TRICKY = ["", "a\\b", "tab\there", "nl\nhere", "cr\rhere", "\\.", "\\N", "end\\", "uni é ☃"]


def test_profiles_of_texts_that_need_escapes_equal_a_rebuild():
    """Backslashes, tabs and newlines in URLs, sessions, categories and properties take the
    careful reading and COPY's escapes; profiles and visitor rows still equal a rebuild."""
    rng = random.Random(5)
    client = ClientFactory()
    visitors = [visitor_id_issue() for _ in range(30)]
    for _ in range(4):
        records = []
        for _ in range(200):
            visitor_id = rng.choice(visitors)
            kind = rng.choice(["page_view", "product_view", "cart_add", "purchase", "custom"])
            text = rng.choice(TRICKY)
            records.append(
                record_new(
                    client_id=client.pk,
                    kind=kind,
                    visitor_id=visitor_id,
                    session_id=rng.choice(["", "s1", "s\\2"]),
                    occurred_at=START
                    + timedelta(seconds=rng.randrange(9000), microseconds=rng.choice([0, 1])),
                    url="https://shop.example/" + text,
                    referrer=rng.choice(["", "https://www.google.com/\t", "https://b.example/\\x"]),
                    product_id=text,
                    category=rng.choice(["", "c\\1", "c\t2"]),
                    order_id=f"o{rng.randrange(3)}" if kind == "purchase" else "",
                    value="12.50" if kind == "purchase" else None,
                    email=rng.choice(["", "", f"{visitor_id[:6].lower()}@example.com"]),
                    properties={"tier": text} if kind == "custom" else {},
                )
            )
        spool_append(records)
        spool_seal_open()
        run = spool_consolidate()
        assert (run.status, run.error) == ("done", "")
    incremental = _snapshot(client)
    seen = set(Visitor.objects.filter(client=client).values_list("visitor_id", "last_seen_at"))

    call_command("rebuild_profiles", client=client.pk)

    assert _snapshot(client) == incremental
    assert (
        set(Visitor.objects.filter(client=client).values_list("visitor_id", "last_seen_at")) == seen
    )
    assert any("\\" in str(profile["attributes"]) for profile in incremental.values())


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="profiles made before the locks: PostgreSQL"
)
def test_a_visitor_given_a_profile_while_its_new_profile_was_being_made_is_merged(monkeypatch):
    """profiles_apply makes the profiles of visitors who have none before it takes their locks;
    one given a profile meanwhile (another loader committed it) is merged under the locks, not
    inserted a second time."""
    from aggregation.profiles import EventRow, ProfileTally
    from aggregation.services import profiles as profiles_service

    client = ClientFactory()
    theirs, ours = ProfileTally(), ProfileTally()
    theirs.add(EventRow("page_view", "s1", START, event_id="00000000-0000-4000-8000-000000000001"))
    ours.add(
        EventRow(
            "cart_add",
            "s1",
            START + timedelta(minutes=1),
            event_id="00000000-0000-4000-8000-000000000002",
        )
    )
    made_early = profiles_service.profiles_made_early

    def made_early_then_another_loader_commits(*, client_id, tallies, recompute):
        early = made_early(client_id=client_id, tallies=tallies, recompute=recompute)
        assert set(early.lines) == {"v1"}
        profiles_service._profiles_write(
            client_id, {"v1": theirs}, now=early.now, idle=timedelta(minutes=30), are_new=True
        )
        return early

    monkeypatch.setattr(
        profiles_service, "profiles_made_early", made_early_then_another_loader_commits
    )
    profiles_service.profiles_apply(client_id=client.pk, tallies={"v1": ours}, recompute=set())

    profile = Profile.objects.get(client=client, visitor_id="v1")
    assert (profile.visits, profile.page_views, profile.cart_adds) == (1, 1, 1)
    assert profile.first_seen_at == START


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="profiles made before the locks: PostgreSQL"
)
def test_a_file_s_new_profiles_are_made_before_any_of_its_locks_and_written_as_made(
    monkeypatch,
):
    """Every client's new profiles are made before the loader's first lock (other loaders may
    wait for those locks), and not made again under them."""
    from aggregation.services import profiles as profiles_service

    rng = random.Random(3)
    clients = [ClientFactory(), ClientFactory()]
    spool_append(
        [
            _event(rng, client.pk, f"v{number}", START + timedelta(minutes=number))
            for client in clients
            for number in range(5)
        ]
    )
    steps = []

    def logged(name, function):
        def wrapper(*args, **kwargs):
            steps.append(name)
            return function(*args, **kwargs)

        monkeypatch.setattr(profiles_service, name, wrapper)

    for name in ("_profile_line", "_visitors_lock", "identities_lock"):
        logged(name, getattr(profiles_service, name))

    run = spool_consolidate()

    assert (run.status, run.profiles_updated) == ("done", 10)
    first_lock = min(steps.index("_visitors_lock"), steps.index("identities_lock"))
    assert steps[:first_lock] == ["_profile_line"] * 10
    assert "_profile_line" not in steps[first_lock:]
