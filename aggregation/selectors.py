from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import Lower, TruncDate

from aggregation.models import Event, Profile, VisitorLink


def profiles_matching(*, client_id: int, condition: Q) -> QuerySet[Profile]:
    """The client's profiles that satisfy a compiled segment rule."""
    return Profile.objects.filter(client_id=client_id).filter(condition)


def newcomer_profile(*, now: datetime) -> dict[str, Any]:
    """The profile values of a visitor on their first visit, before any of it was counted:
    what segment rules are asked of a visitor the tables do not know yet."""
    values: dict[str, Any] = {
        field.attname: field.get_default() for field in Profile._meta.concrete_fields
    }
    return {**values, "visits": 1, "first_seen_at": now, "last_seen_at": now}


def visitor_links(*, client_id: int) -> dict[str, str]:
    """Linked visitor id -> the canonical visitor id whose profile holds its events (B5)."""
    return dict(
        VisitorLink.objects.filter(client_id=client_id).values_list("visitor_id", "canonical_id")
    )


def canonical_of(*, client_id: int, visitor_id: str) -> str:
    """The visitor whose profile holds this visitor's events: the one it is joined to, or
    itself (B5)."""
    link = VisitorLink.objects.filter(client_id=client_id, visitor_id=visitor_id).first()
    return link.canonical_id if link is not None else visitor_id


def profile_get(*, client_id: int, visitor_id: str) -> Profile | None:
    """The profile of a visitor (canonical id), or None."""
    return Profile.objects.filter(client_id=client_id, visitor_id=visitor_id).first()


def profile_by_email(*, client_id: int, email: str) -> Profile | None:
    """The most recently seen profile that gave this address (any case), or None."""
    # lower(email), as the index on profiles has it.
    return (
        Profile.objects.filter(client_id=client_id)
        .annotate(address=Lower("email"))
        .filter(address=email.lower())
        .order_by("-last_seen_at")
        .first()
    )


def canonicals_of(*, client_id: int, visitor_ids: set[str]) -> dict[str, str]:
    """Each visitor -> the canonical visitor whose profile holds its events now (itself when
    it is joined to nobody; B5)."""
    canonicals = {visitor_id: visitor_id for visitor_id in visitor_ids}
    ids = list(visitor_ids)
    for start in range(0, len(ids), 5000):
        links = VisitorLink.objects.filter(
            client_id=client_id, visitor_id__in=ids[start : start + 5000]
        )
        canonicals.update(links.values_list("visitor_id", "canonical_id"))
    return canonicals


def visitors_joined(*, client_id: int, canonicals: set[str]) -> dict[str, str]:
    """Every visitor id whose events belong to these canonical visitors -> its canonical
    (the canonicals themselves included; B5)."""
    members = {canonical: canonical for canonical in canonicals}
    ids = list(canonicals)
    for start in range(0, len(ids), 5000):  # SQLite takes at most 32,766 parameters
        links = VisitorLink.objects.filter(
            client_id=client_id, canonical_id__in=ids[start : start + 5000]
        )
        members.update(links.values_list("visitor_id", "canonical_id"))
    return members


def purchases_of(
    *, client_id: int, visitor_ids: list[str], first: datetime, last: datetime
) -> list[tuple[str, datetime, str, Decimal]]:
    """(visitor, when, order id, value) of the purchases of these visitors in [first, last],
    an order counted once at its last value."""
    orders: dict[tuple[str, str], tuple[str, datetime, str, Decimal]] = {}
    for start in range(0, len(visitor_ids), 5000):
        rows = Event.objects.filter(
            client_id=client_id,
            type=Event.Type.PURCHASE,
            visitor_id__in=visitor_ids[start : start + 5000],
            occurred_at__gte=first,
            occurred_at__lte=last,
        ).values_list("visitor_id", "occurred_at", "order_id", "value", "event_id")
        for visitor_id, at, order_id, value, event_id in rows.order_by("occurred_at"):
            key = (visitor_id, order_id or str(event_id))
            orders[key] = (visitor_id, at, order_id, value or Decimal(0))
    return sorted(orders.values(), key=lambda row: row[1])


def categories_seen(*, client_id: int, limit: int = 200) -> list[str]:
    """The categories of the client's product and category views, for pickers: the names
    the most recently seen profiles carry (their per-category view counts)."""
    names: set[str] = set()
    recent = Profile.objects.filter(client_id=client_id).exclude(categories={})
    for categories in recent.order_by("-last_seen_at").values_list("categories", flat=True)[:2000]:
        names.update(categories)
        if len(names) >= limit:
            break
    return sorted(names)[:limit]


# Buckets of the activity review (S1): (label, lowest value included), ascending.
ORDER_BUCKETS = [("none", 0), ("1", 1), ("2", 2), ("3 or more", 3)]
SPENT_BUCKETS = [("nothing", Decimal(0)), ("under $50", Decimal("0.01")), ("$50-$99", Decimal(50)),
                 ("$100-$249", Decimal(100)), ("$250 or more", Decimal(250))]  # fmt: skip
VISIT_BUCKETS = [("1", 1), ("2", 2), ("3-5", 3), ("6 or more", 6)]

# Per visitor active in the period: orders (an order id counts once, at its highest value),
# dollars spent, visits (sessions; an event without one is a visit of its own).
_VISITORS_SQL = """
SELECT activity.visitor_id, coalesce(bought.orders, 0), coalesce(bought.spent, 0),
    activity.visits
FROM (
    SELECT visitor_id,
        count(DISTINCT CASE WHEN session_id = '' THEN '#' || event_id ELSE session_id END)
            AS visits
    FROM aggregation_event
    WHERE client_id = %s AND occurred_at >= %s AND occurred_at < %s AND type <> 'delivery'
    GROUP BY visitor_id
) AS activity LEFT JOIN (
    SELECT visitor_id, count(*) AS orders, sum(value) AS spent
    FROM (
        SELECT visitor_id, max(coalesce(value, 0)) AS value
        FROM aggregation_event
        WHERE client_id = %s AND occurred_at >= %s AND occurred_at < %s AND type = 'purchase'
        GROUP BY visitor_id, CASE WHEN order_id = '' THEN '#' || event_id ELSE order_id END
    ) AS orders
    GROUP BY visitor_id
) AS bought ON bought.visitor_id = activity.visitor_id
"""


def activity_summary(*, client_id: int, first: date, last: date) -> dict:
    """What the client's visitors did from `first` to `last` (whole UTC days, both included):
    totals, purchasers against non-purchasers, visitors by number of orders, by dollars spent
    and by visits, how they came, and a day-by-day series (S1).

    Memory: one row per active visitor is read and bucketed, about 100 bytes each.
    """
    start = datetime.combine(first, time(), tzinfo=UTC)
    end = datetime.combine(last + timedelta(days=1), time(), tzinfo=UTC)
    adapt = connection.ops.adapt_datetimefield_value
    window = [client_id, adapt(start), adapt(end)]
    orders: Counter[str] = Counter()
    spent: Counter[str] = Counter()
    visits: Counter[str] = Counter()
    visitors = purchasers = order_count = visit_count = 0
    revenue = Decimal("0")
    with connection.cursor() as cursor:
        cursor.execute(_VISITORS_SQL, window * 2)
        for _, visitor_orders, visitor_spent, visitor_visits in cursor:
            visitor_spent = Decimal(str(visitor_spent))  # a float on SQLite
            visitors += 1
            purchasers += visitor_orders > 0
            order_count += visitor_orders
            revenue += visitor_spent
            visit_count += visitor_visits
            orders[_bucket(ORDER_BUCKETS, visitor_orders)] += 1
            spent[_bucket(SPENT_BUCKETS, visitor_spent)] += 1
            visits[_bucket(VISIT_BUCKETS, visitor_visits)] += 1
    events = Event.objects.filter(
        client_id=client_id, occurred_at__gte=start, occurred_at__lt=end
    ).exclude(type=Event.Type.DELIVERY)
    sources = Counter(
        dict(
            Profile.objects.filter(client_id=client_id, visitor_id__in=events.values("visitor_id"))
            .values_list("source")
            .annotate(count=Count("id"))
            .values_list("source", "count")
        )
    )
    return {
        "first": first,
        "last": last,
        "totals": {
            "visitors": visitors,
            "purchasers": purchasers,
            "orders": order_count,
            "revenue": revenue,
            "visits": visit_count,
        },
        "purchasers": [("purchasers", purchasers), ("non-purchasers", visitors - purchasers)],
        "orders": [(label, orders[label]) for label, _ in ORDER_BUCKETS],
        "spent": [(label, spent[label]) for label, _ in SPENT_BUCKETS],
        "visits": [(label, visits[label]) for label, _ in VISIT_BUCKETS],
        "sources": [(label, sources[key]) for key, label in Profile.Source.choices],
        "daily": events_per_day(
            events=events,
            first=first,
            last=last,
            visitors=Count("visitor_id", distinct=True),
            page_views=Count("id", filter=Q(type=Event.Type.PAGE_VIEW)),
            purchases=Count("id", filter=Q(type=Event.Type.PURCHASE)),
        ),
    }


def _bucket(buckets: list, value) -> str:
    label = buckets[0][0]
    for name, lowest in buckets:
        if value >= lowest:
            label = name
    return label


def events_per_day(*, events: QuerySet[Event], first: date, last: date, **counts) -> list[dict]:
    """One row per whole UTC day from `first` to `last`: {"day", <each count>}, zeros on days
    without events. `counts` are aggregates (Count(...)) of the day's events."""
    rows: Any = events.annotate(day=TruncDate("occurred_at", tzinfo=UTC)).values("day")
    found = {row["day"]: {name: row[name] for name in counts} for row in rows.annotate(**counts)}
    empty = dict.fromkeys(counts, 0)
    return [
        {"day": day, **found.get(day, empty)}
        for day in (first + timedelta(days=offset) for offset in range((last - first).days + 1))
    ]
