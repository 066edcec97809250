from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from aggregation.profiles import EventRow, profile_compute, source_classify

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
IDLE = timedelta(minutes=30)


def _at(hour, minute=0):
    return datetime(2026, 11, 1, hour, minute, tzinfo=UTC)


def _row(kind, session, at, **fields):
    return EventRow(type=kind, session_id=session, occurred_at=at, **fields)


def test_profile_compute_sums_up_a_visitors_events():
    events = [
        _row("delivery", "a", _at(9, 59), url="https://shop.example/"),
        _row(
            "page_view",
            "a",
            _at(10),
            url="https://shop.example/?utm_medium=email",
            email="ann@example.com",
        ),
        _row("product_view", "a", _at(10, 1)),
        _row("product_view", "a", _at(10, 2)),
        _row("cart_add", "a", _at(10, 3)),
        _row("cart_remove", "a", _at(10, 4)),
        _row("cart_add", "a", _at(10, 5)),
        _row("purchase", "a", _at(10, 6), order_id="o-1", value=Decimal("20.00")),
        _row("custom", "a", _at(10, 7)),
        _row("page_view", "b", _at(11)),
        _row("cart_add", "b", _at(11, 5)),
    ]

    assert profile_compute(reversed(events), now=NOW, idle=IDLE) == {
        "visits": 2,
        "page_views": 2,
        "product_views": 2,
        "products_viewed": 0,
        "categories": {},
        "cart_adds": 3,
        "cart_removes": 1,
        "cart_abandonments": 1,
        "purchases": 1,
        "total_spent": Decimal("20.00"),
        "average_order_value": Decimal("20.00"),
        "source": "email",
        "email": "ann@example.com",
        "attributes": {},
        "first_seen_at": _at(9, 59),
        "last_seen_at": _at(11, 5),
    }


def test_profile_compute_counts_a_resent_purchase_once():
    events = [
        _row("purchase", "a", _at(10), order_id="o-1", value=Decimal("20.00")),
        _row("purchase", "a", _at(10, 1), order_id="o-1", value=Decimal("20.00")),
        _row("purchase", "b", _at(11), order_id="o-2", value=Decimal("5.50")),
        _row("purchase", "b", _at(11, 30), order_id="o-1", value=Decimal("20.00")),
    ]

    profile = profile_compute(events, now=NOW, idle=IDLE)

    assert profile["purchases"] == 2
    assert profile["total_spent"] == Decimal("25.50")


def test_profile_compute_counts_purchases_without_order_id_each():
    events = [
        _row("purchase", "a", _at(10), value=Decimal("3.00")),
        _row("purchase", "a", _at(10, 1), value=Decimal("4.25")),
        _row("purchase", "a", _at(10, 2), order_id="o-1"),
    ]

    profile = profile_compute(events, now=NOW, idle=IDLE)

    assert profile["purchases"] == 3
    assert profile["total_spent"] == Decimal("7.25")


def test_profile_compute_counts_visits_as_distinct_sessions():
    events = [
        _row("page_view", "a", _at(9)),
        _row("page_view", "b", _at(10)),
        _row("page_view", "a", _at(9, 10)),
        _row("page_view", "c", _at(11)),
        _row("page_view", "b", _at(10, 30)),
    ]

    assert profile_compute(events, now=NOW, idle=IDLE)["visits"] == 3


def test_profile_compute_counts_each_event_without_session_as_a_visit():
    events = [
        _row("page_view", "", _at(9)),
        _row("page_view", "", _at(10)),
        _row("page_view", "a", _at(11)),
    ]

    assert profile_compute(events, now=NOW, idle=IDLE)["visits"] == 3


@pytest.mark.parametrize(
    ("events", "abandoned"),
    [
        ([_row("cart_add", "a", _at(11, 29))], 1),
        ([_row("cart_add", "a", _at(11, 30))], 0),
        ([_row("cart_add", "a", _at(11, 50))], 0),
        ([_row("cart_add", "a", _at(10)), _row("page_view", "a", _at(11, 45))], 0),
        ([_row("cart_add", "a", _at(10)), _row("purchase", "a", _at(10, 5), order_id="o")], 0),
        ([_row("cart_add", "a", _at(9)), _row("purchase", "b", _at(10), order_id="o")], 1),
        ([_row("cart_add", "a", _at(9)), _row("cart_remove", "a", _at(9, 1))], 1),
        ([_row("page_view", "a", _at(9)), _row("cart_remove", "a", _at(9, 1))], 0),
        ([_row("cart_add", "a", _at(9)), _row("cart_add", "b", _at(10))], 2),
        ([_row("cart_add", "a", _at(9)), _row("cart_add", "a", _at(10))], 1),
    ],
    ids=[
        "idle-passed",
        "idle-exactly-reached",
        "still-active",
        "still-active-after-cart",
        "bought",
        "bought-in-another-session",
        "added-then-removed",
        "no-cart-add",
        "two-sessions",
        "two-adds-one-session",
    ],
)
def test_profile_compute_counts_carts_left_in_ended_sessions(events, abandoned):
    assert profile_compute(events, now=NOW, idle=IDLE)["cart_abandonments"] == abandoned


def test_profile_compute_takes_first_and_last_seen_in_any_order():
    events = [
        _row("page_view", "b", _at(11, 15)),
        _row("page_view", "a", _at(8, 45)),
        _row("delivery", "c", _at(11, 40)),
        _row("page_view", "a", _at(9)),
    ]

    profile = profile_compute(events, now=NOW, idle=IDLE)

    assert profile["first_seen_at"] == _at(8, 45)
    assert profile["last_seen_at"] == _at(11, 40)


def test_profile_compute_keeps_the_latest_email_given():
    events = [
        _row("page_view", "a", _at(11), email="second@example.com"),
        _row("page_view", "a", _at(11, 30)),
        _row("page_view", "a", _at(10), email="first@example.com"),
    ]

    assert profile_compute(events, now=NOW, idle=IDLE)["email"] == "second@example.com"


def test_profile_compute_takes_the_source_of_the_first_tracked_event():
    events = [
        _row("page_view", "b", _at(11), url="https://shop.example/?gclid=1"),
        _row("delivery", "a", _at(9, 59), url="https://shop.example/?utm_medium=email"),
        _row("page_view", "a", _at(10), url="https://shop.example/", referrer="https://bing.com/"),
    ]

    assert profile_compute(events, now=NOW, idle=IDLE)["source"] == "search"


def test_profile_compute_of_delivery_only_takes_its_source():
    events = [_row("delivery", "a", _at(10), url="https://shop.example/?utm_campaign=x")]

    assert profile_compute(events, now=NOW, idle=IDLE)["source"] == "campaign"


def test_profile_compute_needs_an_event():
    with pytest.raises(ValueError) as raised:
        profile_compute([], now=NOW, idle=IDLE)

    assert str(raised.value) == "a profile needs at least one event"


@pytest.mark.parametrize(
    ("url", "referrer", "source"),
    [
        ("https://shop.example/?utm_medium=email", "", "email"),
        ("https://shop.example/?utm_medium=EMAIL&utm_campaign=spring", "", "email"),
        ("https://shop.example/?utm_medium=email", "https://www.google.com/", "email"),
        ("https://shop.example/?utm_campaign=spring", "", "campaign"),
        ("https://shop.example/?utm_medium=cpc", "https://www.google.com/", "campaign"),
        ("https://shop.example/?gclid=EAIaIQ", "https://www.google.com/", "campaign"),
        ("https://shop.example/", "https://www.google.com/search?q=shoes", "search"),
        ("https://shop.example/", "https://www.google.co.uk/", "search"),
        ("https://shop.example/", "https://www.bing.com/search?q=shoes", "search"),
        ("https://shop.example/", "https://duckduckgo.com/", "search"),
        ("https://shop.example/", "https://blog.example/best-shoes", "referral"),
        ("https://shop.example/", "https://www.shop.example/", "referral"),
        ("https://shop.example/", "", "direct"),
        ("https://shop.example/cart", "https://shop.example/", "direct"),
        ("https://shop.example/cart", "https://SHOP.example/list", "direct"),
        ("https://shop.example/", "not a url", "direct"),
        ("", "", "direct"),
    ],
)
def test_source_classify(url, referrer, source):
    assert source_classify(url, referrer) == source


def test_products_categories_order_value_and_attributes():
    t0 = _at(9)
    rows = [
        EventRow("product_view", "s1", t0, product_id="driver", category="clubs"),
        EventRow("product_view", "s1", t0 + timedelta(minutes=1), product_id="driver"),
        EventRow("category_view", "s1", t0 + timedelta(minutes=2), category="balls"),
        EventRow("purchase", "s1", t0 + timedelta(minutes=3), order_id="a", value=Decimal("10")),
        EventRow("purchase", "s1", t0 + timedelta(minutes=4), order_id="b", value=Decimal("25")),
        EventRow("custom", "s1", t0 + timedelta(minutes=5), properties={"name": "x", "tier": "s"}),
        EventRow("custom", "s1", t0 + timedelta(minutes=6), properties={"tier": "gold"}),
    ]

    profile = profile_compute(rows, now=t0 + timedelta(days=1), idle=timedelta(minutes=30))

    assert (profile["product_views"], profile["products_viewed"]) == (2, 1)
    assert profile["categories"] == {"balls": 1, "clubs": 1}
    assert (profile["total_spent"], profile["average_order_value"]) == (
        Decimal("35"),
        Decimal("17.50"),
    )
    assert profile["attributes"] == {"tier": "gold"}
