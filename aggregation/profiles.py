"""A visitor's profile computed from their events (A5). Pure: no ORM, tested without a database.

A ProfileTally holds what the rules need of any set of events; tallies of different events
merge. Consolidation adds each file's events to the tally a profile keeps, in the transaction
that loads them, so a file loaded again after a crash adds nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from operator import itemgetter
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from aggregation.records import SpoolLine

CENT = Decimal("0.01")
MAX_CATEGORIES = 100  # distinct categories kept per profile (alphabetically first)
MAX_ATTRIBUTES = 100  # custom attributes kept per profile
SEARCH_ENGINES = ("google.", "bing.", "yahoo.", "duckduckgo.", "baidu.", "yandex.", "ecosia.")


class EventRow(NamedTuple):
    """What a profile reads of one event read back from the database. A named tuple: a rebuild
    makes one for each event it reads (a frozen dataclass cost 1.3 us to make, this 0.3).
    Consolidation tallies its spool lines (records.SpoolLine, the same attribute names) as
    they are."""

    type: str
    session_id: str
    # A datetime, or its text in UTC as datetime.isoformat writes it (how spool lines carry it;
    # such texts sort as their times do).
    occurred_at: datetime | str
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


@lru_cache(maxsize=4096)  # visitors land on few pages from few places
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


_first = itemgetter(0)
# A tally kept with its profile holds at most this many sessions, products, orders, categories,
# attributes and cart adds; a visitor with more is recomputed from its events every time.
MAX_TALLY_ENTRIES = 5_000


class ProfileTally:
    """profile_totals' rules applied one event at a time, the events in any order.

    What a rule needs of the order is kept as a key (time, event id), the time as UTC ISO 8601
    text (utc_text: such texts sort as their times do): the latest value
    of an order id and the last email given win by it, the landing event is the least of them
    that is not a delivery, custom properties are put in its order at the end.

    Two tallies of disjoint events merge into the tally of all of them (merge), and a tally
    is kept with its profile (state, from_state): consolidation adds a file's events to the
    profile's tally instead of reading the visitor's history again.
    """

    __slots__ = (
        "cart_adds",
        "cart_removes",
        "categories",
        "customs",
        "email",
        "email_key",
        "first",
        "landing",
        "latest",
        "latest_session_id",
        "loose_carts",
        "loose_orders",
        "loose_sessions",
        "loose_total",
        "orders",
        "page_views",
        "product_views",
        "products",
        "sessions",
    )

    def __init__(self) -> None:
        self.page_views = self.product_views = self.cart_adds = self.cart_removes = 0
        self.products: set[str] = set()
        self.categories: dict[str, int] = {}
        # order id -> (key, value); purchases without an order id are an order each.
        self.orders: dict[str, tuple[tuple, Decimal]] = {}
        self.loose_orders = 0
        self.loose_total = Decimal("0")
        # session id -> [cart added, bought, last event's time]. An event without a session id
        # is a session of its own, abandoned once idle if it is a cart add: counted, and the
        # times of those cart adds kept.
        self.sessions: dict[str, list] = {}
        self.loose_sessions = 0
        self.loose_carts: list[str] = []
        self.customs: list[tuple[tuple, dict]] = []
        self.email = ""
        self.email_key: tuple | None = None
        self.landing: tuple | None = None  # (is a delivery, key, url, referrer)
        self.first: tuple | None = None
        self.latest: tuple | None = None
        self.latest_session_id = ""

    def __bool__(self) -> bool:
        return self.first is not None

    def add(self, row: EventRow | SpoolLine) -> None:
        """Add one event: a row read from the database, or a spool line as it is loaded."""
        at = row.occurred_at
        if not isinstance(at, str):
            at = utc_text(at)
        key = (at, str(row.event_id))
        kind = row.type
        if self.first is None or key < self.first:
            self.first = key
        if self.latest is None or key > self.latest:
            self.latest = key
            self.latest_session_id = row.session_id
        landing = self.landing
        if landing is None or (kind == "delivery", key) < (landing[0], landing[1]):
            self.landing = (kind == "delivery", key, row.url, row.referrer)
        if kind == "page_view":
            self.page_views += 1
        elif kind == "product_view":
            self.product_views += 1
            if row.product_id:
                self.products.add(row.product_id)
        elif kind == "cart_add":
            self.cart_adds += 1
        elif kind == "cart_remove":
            self.cart_removes += 1
        elif kind == "purchase":
            # Text on a spool line, a Decimal from the database: the same number either way.
            value = Decimal("0") if row.value is None else Decimal(row.value)
            if not row.order_id:
                self.loose_orders += 1
                self.loose_total += value
            else:
                known = self.orders.get(row.order_id)
                if known is None or key > known[0]:
                    self.orders[row.order_id] = (key, value)
        elif kind == "custom" and row.properties:
            self.customs.append((key, row.properties))
        if row.category and (kind == "product_view" or kind == "category_view"):
            self.categories[row.category] = self.categories.get(row.category, 0) + 1
        if row.email and (self.email_key is None or key > self.email_key):
            self.email = row.email
            self.email_key = key
        if not row.session_id:
            self.loose_sessions += 1
            if kind == "cart_add":
                self.loose_carts.append(at)
            return
        session = self.sessions.get(row.session_id)
        if session is None:
            self.sessions[row.session_id] = [kind == "cart_add", kind == "purchase", at]
            return
        if kind == "cart_add":
            session[0] = True
        elif kind == "purchase":
            session[1] = True
        if at > session[2]:
            session[2] = at

    def merge(self, other: ProfileTally) -> ProfileTally:
        """Add another tally's events (none of them in this one) to this tally."""
        if not other:
            return self
        if not self:
            for name in self.__slots__:
                setattr(self, name, getattr(other, name))
            return self
        assert self.first and other.first and self.latest and other.latest
        assert self.landing and other.landing
        self.page_views += other.page_views
        self.product_views += other.product_views
        self.cart_adds += other.cart_adds
        self.cart_removes += other.cart_removes
        self.products |= other.products
        for category, views in other.categories.items():
            self.categories[category] = self.categories.get(category, 0) + views
        for order_id, (key, value) in other.orders.items():
            known = self.orders.get(order_id)
            if known is None or key > known[0]:
                self.orders[order_id] = (key, value)
        self.loose_orders += other.loose_orders
        self.loose_total += other.loose_total
        for session_id, (cart, bought, last) in other.sessions.items():
            session = self.sessions.get(session_id)
            if session is None:
                self.sessions[session_id] = [cart, bought, last]
            else:
                session[0] |= cart
                session[1] |= bought
                session[2] = max(session[2], last)
        self.loose_sessions += other.loose_sessions
        self.loose_carts += other.loose_carts
        self.customs += other.customs
        if other.email_key is not None and (
            self.email_key is None or other.email_key > self.email_key
        ):
            self.email, self.email_key = other.email, other.email_key
        if other.landing[:2] < self.landing[:2]:
            self.landing = other.landing
        self.first = min(self.first, other.first)
        if other.latest > self.latest:
            self.latest, self.latest_session_id = other.latest, other.latest_session_id
        return self

    def totals(self, *, now: datetime, idle: timedelta) -> ProfileTotals:
        if self.first is None or self.latest is None or self.landing is None:
            raise ValueError("a profile needs at least one event")
        order_values = [value for _, value in self.orders.values()]
        sessions = self.sessions.values()
        # Ended (idle longer than `idle`) before now: last event earlier than now - idle.
        ended_before = utc_text(now - idle)
        return ProfileTotals(
            visits=len(self.sessions) + self.loose_sessions,
            cart_abandonments=sum(
                1 for cart, bought, last in sessions if cart and not bought and last < ended_before
            )
            + sum(1 for at in self.loose_carts if at < ended_before),
            page_views=self.page_views,
            product_views=self.product_views,
            products_viewed=len(self.products),
            cart_adds=self.cart_adds,
            cart_removes=self.cart_removes,
            purchases=len(order_values) + self.loose_orders,
            total_spent=sum(order_values, self.loose_total),
            categories=dict(self.categories),
            email=self.email,
            custom_properties=[properties for _, properties in sorted(self.customs, key=_first)],
            landing_url=self.landing[2],
            landing_referrer=self.landing[3],
            first_seen_at=datetime.fromisoformat(self.first[0]),
            last_seen_at=datetime.fromisoformat(self.latest[0]),
        )

    def state(self) -> dict | None:
        """The tally as JSON, to keep with the profile; None when it holds more than
        MAX_TALLY_ENTRIES entries (the profile is then recomputed from its events)."""
        if self.first is None or self.latest is None or self.landing is None:
            return None
        # Custom properties by attribute: the value of the latest event that set it is all
        # profile_finish keeps of them.
        attributes: dict[str, tuple] = {}
        for key, properties in self.customs:
            for name, value in properties.items():
                if name not in attributes or key > attributes[name][0]:
                    attributes[name] = (key, value)
        entries = (
            len(self.sessions)
            + len(self.products)
            + len(self.orders)
            + len(self.categories)
            + len(attributes)
            + len(self.loose_carts)
        )
        if entries > MAX_TALLY_ENTRIES:
            return None
        return {
            "counts": [
                self.page_views,
                self.product_views,
                self.cart_adds,
                self.cart_removes,
                self.loose_orders,
                self.loose_sessions,
            ],
            "loose_total": str(self.loose_total),
            "products": sorted(self.products),
            "categories": self.categories,
            "orders": {
                order_id: [*key, str(value)] for order_id, (key, value) in self.orders.items()
            },
            "sessions": self.sessions,
            "loose_carts": sorted(self.loose_carts),
            "attributes": {name: [*key, value] for name, (key, value) in attributes.items()},
            "email": [self.email, *self.email_key] if self.email_key else None,
            "landing": [self.landing[0], *self.landing[1], *self.landing[2:]],
            "first": self.first,
            "latest": [*self.latest, self.latest_session_id],
        }

    @classmethod
    def from_state(cls, state: dict) -> ProfileTally:
        tally = cls()
        (
            tally.page_views,
            tally.product_views,
            tally.cart_adds,
            tally.cart_removes,
            tally.loose_orders,
            tally.loose_sessions,
        ) = state["counts"]
        tally.loose_total = Decimal(state["loose_total"])
        tally.products = set(state["products"])
        tally.categories = dict(state["categories"])
        tally.orders = {
            order_id: ((at, event_id), Decimal(value))
            for order_id, (at, event_id, value) in state["orders"].items()
        }
        tally.sessions = state["sessions"]
        tally.loose_carts = state["loose_carts"]
        tally.customs = [
            ((at, event_id), {name: value})
            for name, (at, event_id, value) in state["attributes"].items()
        ]
        if state["email"]:
            email, at, event_id = state["email"]
            tally.email, tally.email_key = email, (at, event_id)
        is_delivery, at, event_id, url, referrer = state["landing"]
        tally.landing = (is_delivery, (at, event_id), url, referrer)
        tally.first = tuple(state["first"])
        at, event_id, tally.latest_session_id = state["latest"]
        tally.latest = (at, event_id)
        return tally

    @property
    def first_seen_at(self) -> datetime:
        assert self.first is not None
        return datetime.fromisoformat(self.first[0])

    @property
    def last_seen_at(self) -> datetime:
        assert self.latest is not None
        return datetime.fromisoformat(self.latest[0])


def utc_text(moment: datetime) -> str:
    """A time as the spool's writers write it: UTC, ISO 8601, microseconds only when there are
    some. Such texts sort as their times do (same length but for the fraction, and "+" sorts
    before ".")."""
    return moment.astimezone(UTC).isoformat()


def profile_totals(events: Iterable[EventRow], *, now: datetime, idle: timedelta) -> ProfileTotals:
    """The totals of one visitor's events (any order).

    The rules, which the SQL version follows clause by clause: events in (time, event id)
    order; a visit is a session id (an event without one is a visit of its own); an order id
    counts once, at its last value (an event without one is an order of its own); a cart is
    abandoned when its session has no purchase and ended (idle longer than `idle`) before
    `now`; the landing event is the first one that is not a delivery (else the first); the
    email is the last one given.
    """
    tally = ProfileTally()
    for row in events:
        tally.add(row)
    return tally.totals(now=now, idle=idle)


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
