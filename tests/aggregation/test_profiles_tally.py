"""Profiles from tallies agree with profile_totals over all the events (A5).

Consolidation keeps a tally with each profile and adds each file's events to it; a rebuild
reads every event back. Hypothesis draws event histories full of ties (same instant, same order
id, sessions left empty), cuts them into parts loaded in any order, and every way must give the
profile of all the events at once.
"""

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from unittest import mock

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregation.models import Event, Profile, VisitorLink
from aggregation.profiles import (
    EventRow,
    ProfileTally,
    profile_finish,
    profile_totals,
    utc_text,
)
from aggregation.records import RECORD_TYPES
from aggregation.services.profiles import UTC_TEXT_SQL, profiles_rebuild
from delivery.models import Visitor
from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db

START = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
IDLE = timedelta(minutes=30)

events_strategy = st.fixed_dictionaries(
    {
        "member": st.sampled_from(["v1", "v2", "v3"]),
        "type": st.sampled_from(RECORD_TYPES),
        "session_id": st.sampled_from(["", "s1", "s2", "s3"]),
        # Few distinct instants: many ties, which the event id must order the same way.
        "minute": st.integers(min_value=0, max_value=90).map(lambda m: m - m % 15),
        "url": st.sampled_from(
            ["", "https://shop.example/", "https://shop.example/?utm_medium=email"]
        ),
        "referrer": st.sampled_from(["", "https://www.google.com/", "https://blog.example/"]),
        "order_id": st.sampled_from(["", "o1", "o2"]),
        "value": st.sampled_from([None, Decimal("0.01"), Decimal("10.00"), Decimal("25.55")]),
        "email": st.sampled_from(["", "ann@example.com", "bob@example.com"]),
        "product_id": st.sampled_from(["", "driver", "putter"]),
        "category": st.sampled_from(["", "clubs", "balls", "Bags"]),
        "properties": st.sampled_from(
            [{}, {"tier": "gold"}, {"tier": "silver", "name": "x"}, {"newsletter": True}]
        ),
    }
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    drawn=st.lists(events_strategy, min_size=1, max_size=25),
    linked=st.booleans(),
    now_minute=st.sampled_from([60, 100, 200]),
)
def test_a_rebuild_from_the_database_equals_python_totals(drawn, linked, now_minute):
    client = ClientFactory()
    events = [
        Event(
            client=client,
            event_id=uuid.uuid4(),
            visitor_id=item["member"],
            type=item["type"],
            session_id=item["session_id"],
            occurred_at=START + timedelta(minutes=item["minute"]),
            received_at=START,
            url=item["url"],
            referrer=item["referrer"],
            order_id=item["order_id"],
            value=item["value"],
            email=item["email"],
            product_id=item["product_id"],
            category=item["category"],
            properties=item["properties"],
        )
        for item in drawn
    ]
    Event.objects.bulk_create(events)
    # v2 joined to v1 (one profile of both) or each a profile of its own.
    batch = {"v1": {"v1", "v2"}, "v3": {"v3"}} if linked else {v: {v} for v in ("v1", "v2", "v3")}
    if linked:
        VisitorLink.objects.create(
            client=client, visitor_id="v2", canonical_id="v1", email="ann@example.com"
        )
    now = START + timedelta(minutes=now_minute)

    with mock.patch("django.utils.timezone.now", return_value=now):
        profiles_rebuild(client_id=client.pk, visitor_ids={"v1", "v2", "v3"})

    expected = {}
    for canonical, members in batch.items():
        rows = [_row(event) for event in events if event.visitor_id in members]
        if rows:
            expected[canonical] = profile_finish(profile_totals(rows, now=now, idle=IDLE))
    fields = list(next(iter(expected.values())))
    written = {
        profile["visitor_id"]: {name: profile[name] for name in fields}
        for profile in Profile.objects.filter(client=client).values("visitor_id", *fields)
    }
    assert written == expected
    # The visitor rows of every member seen, each from its own events.
    seen = {event.visitor_id for event in events}
    assert set(Visitor.objects.filter(client=client).values_list("visitor_id", "last_seen_at")) == {
        (member, max(e.occurred_at for e in events if e.visitor_id == member)) for member in seen
    }
    client.delete()


@settings(max_examples=200, deadline=None)
@given(
    drawn=st.lists(events_strategy, min_size=1, max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=3), min_size=30, max_size=30),
    now_minute=st.sampled_from([60, 100, 200]),
)
def test_tallies_of_parts_merged_through_their_state_equal_the_tally_of_all(
    drawn, cuts, now_minute
):
    """Events cut into up to four parts (each a file's events of one visitor), tallied, kept
    (state and back) and merged in any order: the profile of all the events at once."""
    rows = [
        EventRow(
            type=item["type"],
            session_id=item["session_id"],
            occurred_at=START + timedelta(minutes=item["minute"]),
            url=item["url"],
            referrer=item["referrer"],
            order_id=item["order_id"],
            value=item["value"],
            email=item["email"],
            product_id=item["product_id"],
            category=item["category"],
            properties=item["properties"] or None,
            event_id=str(uuid.UUID(int=index + 1)),
        )
        for index, item in enumerate(drawn)
    ]
    now = START + timedelta(minutes=now_minute)
    parts: dict[int, ProfileTally] = {}
    for row, part in zip(rows, cuts, strict=False):
        parts.setdefault(part, ProfileTally()).add(row)

    kept = ProfileTally()
    for part in sorted(parts, reverse=True):  # later parts first: events out of order
        state = kept.state()
        kept = (ProfileTally.from_state(state) if state else ProfileTally()).merge(parts[part])

    expected = profile_finish(profile_totals(rows, now=now, idle=IDLE))
    assert profile_finish(kept.totals(now=now, idle=IDLE)) == expected
    assert profile_finish(ProfileTally.from_state(kept.state()).totals(now=now, idle=IDLE)) == (
        expected
    )


def _row(event: Event) -> EventRow:
    return EventRow(
        type=event.type,
        session_id=event.session_id,
        occurred_at=event.occurred_at,
        url=event.url,
        referrer=event.referrer,
        order_id=event.order_id,
        value=event.value,
        email=event.email,
        product_id=event.product_id,
        category=event.category,
        properties=event.properties,
        event_id=str(event.event_id),
    )


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 1, 10, 0, tzinfo=UTC),
        datetime(2026, 11, 1, 10, 0, 5, 1, tzinfo=UTC),
        datetime(2026, 11, 1, 10, 0, 5, 500000, tzinfo=UTC),
        datetime(2026, 11, 1, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5))),
        datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC),
    ],
)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's to_char")
def test_the_database_writes_times_as_utc_text_does(moment):
    """Rebuilds read times as text (UTC_TEXT_SQL) and consolidation from spool lines: one text
    for one time, or ties would be broken apart."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {UTC_TEXT_SQL} FROM (SELECT %s::timestamptz AS occurred_at) AS event",
            [moment],
        )
        [(text,)] = cursor.fetchall()

    assert text == utc_text(moment)


@pytest.mark.parametrize("value", [None, "0.00", "349.00", "0.01"])
def test_a_spool_line_and_the_database_row_of_one_purchase_make_one_tally(value):
    """Consolidation tallies spool lines (the value as text), a rebuild database rows (a
    Decimal): the kept tallies must be the same text, zero included."""
    from aggregation.records import SpoolLine
    from aggregation.services.profiles import _tally_text

    at = utc_text(START)
    event_id = "00000000-0000-4000-8000-000000000001"
    line = SpoolLine(
        event_id=event_id, client=1, type="purchase", visitor_id="v1", session_id="s1",
        occurred_at=at, received_at=at, url="https://shop.example/", referrer="",
        campaign_key="", placement_key="", content_id=None, table_version=None,
        product_id="", category="", order_id="o1", value=value, currency="USD", email="",
        properties={},
    )  # fmt: skip
    row = EventRow(
        "purchase",
        "s1",
        at,
        url="https://shop.example/",
        order_id="o1",
        value=None if value is None else Decimal(value),
        event_id=event_id,
    )
    from_line, from_row = ProfileTally(), ProfileTally()
    from_line.add(line)
    from_row.add(row)

    assert _tally_text(from_line.state()) == _tally_text(from_row.state())
