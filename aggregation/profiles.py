"""A visitor's profile computed from their events (A5). Pure: no ORM, tested without a database.

Recomputing from the events (rather than adding to counters) makes consolidation idempotent:
loading a file twice, or after a crash, yields the same profile.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

CENT = Decimal("0.01")
MAX_CATEGORIES = 100  # distinct categories kept per profile (alphabetically first)
MAX_ATTRIBUTES = 100  # custom attributes kept per profile
SEARCH_ENGINES = ("google.", "bing.", "yahoo.", "duckduckgo.", "baidu.", "yandex.", "ecosia.")


class EventRow(NamedTuple):
    """What a profile reads of one event. A named tuple: consolidation makes one for each event
    it loads (a frozen dataclass cost 1.3 us to make, this 0.3)."""

    type: str
    session_id: str
    occurred_at: datetime
    url: str = ""
    referrer: str = ""
    order_id: str = ""
    value: Decimal | None = None
    email: str = ""
    product_id: str = ""
    category: str = ""
    properties: dict | None = None
    # Orders events of one instant the same way every time, whatever order the database
    # returns them in, so a rebuild from events gives exactly the incremental profile.
    event_id: str = ""


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:  # e.g. "http://[": recorded as sent, but names no host
        return ""


def source_classify(url: str, referrer: str) -> str:
    """How a visit came: email, campaign, search, referral or direct (landing URL + referrer)."""
    try:
        query = parse_qs(urlsplit(url).query)
    except ValueError:
        query = {}
    medium = (query.get("utm_medium") or [""])[0].lower()
    if medium == "email":
        return "email"
    if medium or "utm_campaign" in query or "gclid" in query:
        return "campaign"
    referrer_host = _host(referrer)
    if not referrer_host or referrer_host == _host(url):
        return "direct"
    if any(engine in referrer_host for engine in SEARCH_ENGINES):
        return "search"
    return "referral"


@dataclass
class ProfileTotals:
    """What a profile is finished from: per-event work, done over the events in Python
    (profile_totals) or in PostgreSQL (aggregation/services/profiles.py), which must agree."""

    visits: int
    cart_abandonments: int
    page_views: int
    product_views: int
    products_viewed: int
    cart_adds: int
    cart_removes: int
    purchases: int
    total_spent: Decimal
    categories: dict[str, int]
    email: str
    # The properties of the visitor's custom events, oldest first.
    custom_properties: list[dict]
    landing_url: str
    landing_referrer: str
    first_seen_at: datetime
    last_seen_at: datetime


def profile_totals(events: Iterable[EventRow], *, now: datetime, idle: timedelta) -> ProfileTotals:
    """The totals of one visitor's events (any order).

    The rules, which the SQL version follows clause by clause: events in (time, event id)
    order; a visit is a session id (an event without one is a visit of its own); an order id
    counts once, at its last value (an event without one is an order of its own); a cart is
    abandoned when its session has no purchase and ended (idle longer than `idle`) before
    `now`; the landing event is the first one that is not a delivery (else the first); the
    email is the last one given.
    """
    rows = sorted(events, key=lambda row: (row.occurred_at, str(row.event_id)))
    if not rows:
        raise ValueError("a profile needs at least one event")
    counts = {"page_view": 0, "product_view": 0, "cart_add": 0, "cart_remove": 0}
    orders: dict[str, Decimal] = {}
    sessions: dict[str, dict] = {}
    products: set[str] = set()
    categories: Counter[str] = Counter()
    custom_properties = []
    email = ""
    for index, row in enumerate(rows):
        if row.type in counts:
            counts[row.type] += 1
        if row.type == "product_view" and row.product_id:
            products.add(row.product_id)
        if row.type in ("product_view", "category_view") and row.category:
            categories[row.category] += 1
        if row.type == "purchase":
            # A purchase re-sent under a new event id still names the same order once.
            orders[row.order_id or f"#{index}"] = row.value or Decimal("0")
        if row.type == "custom" and row.properties:
            custom_properties.append(row.properties)
        if row.email:
            email = row.email
        session = sessions.setdefault(
            row.session_id or f"#{index}", {"cart": False, "bought": False, "last": row}
        )
        session["cart"] |= row.type == "cart_add"
        session["bought"] |= row.type == "purchase"
        session["last"] = row
    landing = next((row for row in rows if row.type != "delivery"), rows[0])
    return ProfileTotals(
        visits=len(sessions),
        cart_abandonments=sum(
            1
            for session in sessions.values()
            if session["cart"]
            and not session["bought"]
            and now - session["last"].occurred_at > idle
        ),
        page_views=counts["page_view"],
        product_views=counts["product_view"],
        products_viewed=len(products),
        cart_adds=counts["cart_add"],
        cart_removes=counts["cart_remove"],
        purchases=len(orders),
        total_spent=sum(orders.values(), Decimal("0")),
        categories=dict(categories),
        email=email,
        custom_properties=custom_properties,
        landing_url=landing.url,
        landing_referrer=landing.referrer,
        first_seen_at=rows[0].occurred_at,
        last_seen_at=rows[-1].occurred_at,
    )


def profile_finish(totals: ProfileTotals) -> dict:
    """Profile field values from a visitor's totals: the per-visitor work."""
    attributes: dict = {}
    for properties in totals.custom_properties:
        attributes.update((key, value) for key, value in properties.items() if key != "name")
    total = totals.total_spent
    return {
        "visits": totals.visits,
        "page_views": totals.page_views,
        "product_views": totals.product_views,
        "products_viewed": totals.products_viewed,
        "categories": dict(sorted(totals.categories.items())[:MAX_CATEGORIES]),
        "cart_adds": totals.cart_adds,
        "cart_removes": totals.cart_removes,
        "cart_abandonments": totals.cart_abandonments,
        "purchases": totals.purchases,
        "total_spent": total,
        "average_order_value": (
            (total / totals.purchases).quantize(CENT) if totals.purchases else Decimal("0")
        ),
        "source": source_classify(totals.landing_url, totals.landing_referrer),
        "email": totals.email,
        "attributes": dict(sorted(attributes.items())[:MAX_ATTRIBUTES]),
        "first_seen_at": totals.first_seen_at,
        "last_seen_at": totals.last_seen_at,
    }


def profile_compute(events: Iterable[EventRow], *, now: datetime, idle: timedelta) -> dict:
    """Profile field values from one visitor's events (any order)."""
    return profile_finish(profile_totals(events, now=now, idle=idle))
