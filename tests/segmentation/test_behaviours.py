"""Behavioural conditions (S2): counts of what visitors did, in time windows."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from aggregation.models import Event, Profile, VisitorLink
from segmentation.rules import RuleError, rule_compile, rule_validate
from tests.factories import ClientFactory, ProfileFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
IDLE = timedelta(minutes=30)
TWICE_IN_30_DAYS = {"event": "purchase", "count": {"op": "gte", "value": 2}, "within_days": 30}
CLUBS_THREE_TIMES = {
    "event": "category_view",
    "category": "golf-clubs",
    "count": {"op": "gte", "value": 3},
}
ABANDONED_IN_7_DAYS = {
    "event": "cart_abandonment",
    "count": {"op": "gte", "value": 1},
    "within_days": 7,
}
NO_PURCHASE_IN_30_DAYS = {"event": "purchase", "count": {"op": "eq", "value": 0}, "within_days": 30}


@pytest.fixture
def client():
    return ClientFactory()


def _visitor(client, name, *events):
    """A profile and its events: (type, time before NOW, fields)."""
    ProfileFactory(client=client, visitor_id=name)
    Event.objects.bulk_create(
        Event(
            client=client,
            event_id=uuid.uuid4(),
            visitor_id=name,
            type=kind,
            occurred_at=NOW - ago,
            received_at=NOW,
            **fields,
        )
        for kind, ago, fields in events
    )


def _selected(client, rule):
    condition = rule_compile(rule_validate(rule), client_id=client.pk, now=NOW, idle=IDLE)
    return set(
        Profile.objects.filter(condition, client=client).values_list("visitor_id", flat=True)
    )


def test_purchased_at_least_twice_in_the_last_30_days(client):
    day = timedelta(days=1)
    _visitor(client, "two-orders", ("purchase", day, {"order_id": "a"}), ("purchase", 2 * day, {}))
    _visitor(client, "one-order-sent-twice", *[("purchase", day, {"order_id": "a"})] * 2)
    _visitor(client, "one-too-old", ("purchase", day, {}), ("purchase", 31 * day, {}))
    _visitor(client, "on-the-edge", ("purchase", day, {}), ("purchase", 30 * day, {}))
    _visitor(client, "browser", ("page_view", day, {}))

    assert _selected(client, TWICE_IN_30_DAYS) == {"two-orders", "on-the-edge"}


def test_viewed_the_golf_clubs_category_at_least_three_times(client):
    hour = timedelta(hours=1)
    _visitor(client, "fan", *[("category_view", hour, {"category": "golf-clubs"})] * 3)
    _visitor(
        client,
        "mixed",
        *[("category_view", hour, {"category": "golf-clubs"})] * 2,
        ("category_view", hour, {"category": "balls"}),
        ("product_view", hour, {"category": "golf-clubs"}),
    )

    assert _selected(client, CLUBS_THREE_TIMES) == {"fan"}


def test_abandoned_a_cart_in_the_last_7_days(client):
    _visitor(client, "left", ("cart_add", timedelta(hours=2), {"session_id": "s"}))
    _visitor(
        client,
        "bought",
        ("cart_add", timedelta(hours=2), {"session_id": "s"}),
        ("purchase", timedelta(hours=1), {"session_id": "s"}),
    )
    _visitor(client, "still-shopping", ("cart_add", timedelta(minutes=10), {"session_id": "s"}))
    _visitor(client, "long-ago", ("cart_add", timedelta(days=8), {"session_id": "s"}))

    assert _selected(client, ABANDONED_IN_7_DAYS) == {"left"}


def test_a_count_of_zero_includes_visitors_without_any_such_event(client):
    _visitor(client, "recent-buyer", ("purchase", timedelta(days=3), {}))
    _visitor(client, "lapsed", ("purchase", timedelta(days=40), {}))
    _visitor(client, "never-bought", ("page_view", timedelta(days=1), {}))
    ProfileFactory(client=client, visitor_id="no-events-at-all")

    assert _selected(client, NO_PURCHASE_IN_30_DAYS) == {
        "lapsed",
        "never-bought",
        "no-events-at-all",
    }


def test_between_two_dates_counts_both_whole_days(client):
    rule = {
        "event": "page_view",
        "count": {"op": "gte", "value": 1},
        "between": ["2026-10-01", "2026-10-02"],
    }
    _visitor(
        client, "first-morning", ("page_view", NOW - datetime(2026, 10, 1, 0, 0, tzinfo=UTC), {})
    )
    _visitor(
        client, "last-night", ("page_view", NOW - datetime(2026, 10, 2, 23, 59, tzinfo=UTC), {})
    )
    _visitor(client, "day-after", ("page_view", NOW - datetime(2026, 10, 3, 0, 0, tzinfo=UTC), {}))

    assert _selected(client, rule) == {"first-morning", "last-night"}


def test_a_joined_visitors_events_count_for_the_profile_they_joined(client):
    _visitor(client, "canonical", ("purchase", timedelta(days=1), {"order_id": "a"}))
    Event.objects.create(
        client=client,
        event_id=uuid.uuid4(),
        visitor_id="other-browser",
        type="purchase",
        order_id="b",
        occurred_at=NOW - timedelta(days=2),
        received_at=NOW,
    )
    VisitorLink.objects.create(
        client=client, visitor_id="other-browser", canonical_id="canonical", email="a@example.com"
    )

    assert _selected(client, TWICE_IN_30_DAYS) == {"canonical"}


def test_another_clients_events_never_count(client):
    other = ClientFactory()
    ProfileFactory(client=client, visitor_id="shared-id")
    _visitor(
        other, "shared-id", ("purchase", timedelta(days=1), {}), ("purchase", timedelta(days=2), {})
    )

    assert _selected(client, TWICE_IN_30_DAYS) == set()


def _bought(**changes):
    return {"event": "purchase", "count": {"op": "gte", "value": 1}, **changes}


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        (_bought(event="refund"), "rule.event: unknown event 'refund'"),
        (
            _bought(count={"op": "like", "value": 1}),
            "rule.count.op: 'like' is not one of eq, ne, gt, gte, lt, lte",
        ),
        (
            _bought(count={"op": "gte", "value": -1}),
            "rule.count.value: must be a whole number from 0 to 1000000",
        ),
        (_bought(within_days=0), "rule.within_days: must be a whole number from 1 to 3650"),
        (
            _bought(between=["2026-10-02", "2026-10-01"]),
            "rule.between: the first date is after the second",
        ),
        (_bought(between=["yesterday"]), "rule.between: must be two dates, YYYY-MM-DD"),
        (
            _bought(event="cart_abandonment", category="x"),
            "rule.category: abandoned carts are counted by session, unfiltered",
        ),
        (_bought(sql="1=1"), "rule: unknown keys ['sql']"),
    ],
)
def test_behaviours_are_refused_with_exact_errors(rule, error):
    with pytest.raises(RuleError) as raised:
        rule_validate(rule)

    assert raised.value.errors == [error]


def test_an_abandoned_cart_is_judged_on_its_whole_session(client):
    rule = {
        "event": "cart_abandonment",
        "count": {"op": "gte", "value": 1},
        "between": ["2026-10-01", "2026-10-07"],
    }
    late = NOW - datetime(2026, 10, 7, 23, 55, tzinfo=UTC)
    next_day = NOW - datetime(2026, 10, 8, 0, 5, tzinfo=UTC)
    _visitor(
        client,
        "bought-after-midnight",
        ("cart_add", late, {"session_id": "s"}),
        ("purchase", next_day, {"session_id": "s"}),
    )
    _visitor(client, "left-it", ("cart_add", late, {"session_id": "s"}))
    _visitor(
        client,
        "ended-after-the-window",
        ("cart_add", late, {"session_id": "s"}),
        ("page_view", next_day, {"session_id": "s"}),
    )

    assert _selected(client, rule) == {"left-it"}


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        (_bought(count={"op": ["gte"], "value": 1}), "rule.count.op: ['gte'] is not one of"),
        (_bought(between=["2026-01-01", "9999-12-31"]), "rule.between: dates from 2000-01-01"),
    ],
)
def test_odd_values_are_refused_not_crashed_on(rule, error):
    with pytest.raises(RuleError) as raised:
        rule_validate(rule)

    assert raised.value.errors[0].startswith(error)
