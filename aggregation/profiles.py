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
from urllib.parse import parse_qs, urlsplit

CENT = Decimal("0.01")
MAX_CATEGORIES = 100  # distinct categories kept per profile (alphabetically first)
MAX_ATTRIBUTES = 100  # custom attributes kept per profile
SEARCH_ENGINES = ("google.", "bing.", "yahoo.", "duckduckgo.", "baidu.", "yandex.", "ecosia.")


@dataclass(frozen=True)
class EventRow:
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


def profile_compute(events: Iterable[EventRow], *, now: datetime, idle: timedelta) -> dict:
    """Profile field values from one visitor's events (any order)."""
    rows = sorted(events, key=lambda row: (row.occurred_at, str(row.event_id)))
    if not rows:
        raise ValueError("a profile needs at least one event")
    counts = {"page_view": 0, "product_view": 0, "cart_add": 0, "cart_remove": 0}
    orders: dict[str, Decimal] = {}
    sessions: dict[str, dict] = {}
    products: set[str] = set()
    categories: Counter[str] = Counter()
    attributes: dict = {}
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
            attributes.update(
                (key, value) for key, value in row.properties.items() if key != "name"
            )
        if row.email:
            email = row.email
        session = sessions.setdefault(
            row.session_id or f"#{index}", {"cart": False, "bought": False, "last": row}
        )
        session["cart"] |= row.type == "cart_add"
        session["bought"] |= row.type == "purchase"
        session["last"] = row
    abandoned = sum(
        1
        for session in sessions.values()
        if session["cart"] and not session["bought"] and now - session["last"].occurred_at > idle
    )
    landing = next((row for row in rows if row.type != "delivery"), rows[0])
    total = sum(orders.values(), Decimal("0"))
    return {
        "visits": len(sessions),
        "page_views": counts["page_view"],
        "product_views": counts["product_view"],
        "products_viewed": len(products),
        "categories": dict(sorted(categories.items())[:MAX_CATEGORIES]),
        "cart_adds": counts["cart_add"],
        "cart_removes": counts["cart_remove"],
        "cart_abandonments": abandoned,
        "purchases": len(orders),
        "total_spent": total,
        "average_order_value": (total / len(orders)).quantize(CENT) if orders else Decimal("0"),
        "source": source_classify(landing.url, landing.referrer),
        "email": email,
        "attributes": dict(sorted(attributes.items())[:MAX_ATTRIBUTES]),
        "first_seen_at": rows[0].occurred_at,
        "last_seen_at": rows[-1].occurred_at,
    }
