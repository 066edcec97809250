"""Profiles from events (A5) and identity stitching (B5): recomputation, locks, settling."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection
from datetime import datetime, timedelta

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from psycopg2.extras import Json, execute_values

from aggregation.models import Event, Profile, VisitorLink
from aggregation.profiles import (
    EventRow,
    ProfileTally,
    ProfileTotals,
    profile_finish,
    profile_totals,
)
from delivery.services import VisitorSeen, visitors_upsert

logger = logging.getLogger(__name__)

# Profiles are recomputed in slices of this many visitors, one query each: in PostgreSQL (its
# memory, bounded by work_mem), or here from the events read back (about 1 KB of memory per
# event read, on SQLite).
PROFILE_BATCH = {"postgresql": 5_000, "sqlite": 500}
# Profiles recomputed in one transaction (their visitors stay locked until it commits).
PROFILES_PER_TRANSACTION = 5_000


# Visitors are locked by bucket (their hash modulo this), so that a transaction holds at most
# this many advisory locks whatever its size (PostgreSQL's lock table is ~6,400 by default).
LOCK_BUCKETS = 256


def _visitors_lock(client_id: int, visitor_ids: list[str]) -> None:
    """Until commit, no other transaction recomputes these visitors' profiles.

    Two consolidations (two nodes) loading events of one visitor would otherwise each compute
    the profile without the other's uncommitted events, and the later write would lose them.
    Keyed (client id, bucket) and taken in ascending order by every run (clients ascending,
    then buckets), so two runs cannot deadlock; a no-op on SQLite, which has one writer.
    """
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, bucket) FROM ("
            "  SELECT DISTINCT (hashtext(v) & %s) AS bucket FROM unnest(%s::text[]) AS v"
            ") AS buckets ORDER BY bucket",
            [client_id, LOCK_BUCKETS - 1, visitor_ids],
        )


def identities_lock(client_id: int, *, exclusive: bool) -> None:
    """Stitching (exclusive) against profile rebuilds (shared), per client, until commit:
    a rebuild reads the links and then writes profiles, which a join must not change between.
    Taken before any visitor bucket (key -1 < 0), so the global lock order still holds."""
    if connection.vendor != "postgresql":
        return
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s, -1)", [client_id])


def profiles_rebuild(*, client_id: int, visitor_ids: set[str]) -> int:
    """Recompute the profiles (and visitor rows) of these visitors from all their events; a
    visitor linked to another (identities_stitch) counts in that one's profile."""
    now = timezone.now()
    idle = timedelta(minutes=settings.SESSION_IDLE_MINUTES)
    identities_lock(client_id, exclusive=False)
    links = _links_of(client_id, visitor_ids)
    canonicals = sorted({links.get(visitor_id, visitor_id) for visitor_id in visitor_ids})
    members: dict[str, set[str]] = {canonical: {canonical} for canonical in canonicals}
    for alias, canonical in _links_to(client_id, canonicals).items():
        members[canonical].add(alias)
    written = 0
    _visitors_lock(client_id, canonicals)
    size = PROFILE_BATCH[connection.vendor]
    for start in range(0, len(canonicals), size):
        batch = {canonical: members[canonical] for canonical in canonicals[start : start + size]}
        if connection.vendor == "postgresql":
            totals = _totals_sql(client_id, batch, now=now, idle=idle)
        else:
            totals = _totals_python(client_id, batch, now=now, idle=idle)
        profiles = [
            Profile(client_id=client_id, visitor_id=visitor_id, **profile_finish(visitor_totals))
            for visitor_id, visitor_totals in totals.items()
        ]
        _profiles_upsert(profiles, computed_at=now)
        # A joined visitor counts in its canonical profile only (whatever raced to write it).
        aliases = [member for group in batch.values() for member in group if member not in members]
        Profile.objects.filter(client_id=client_id, visitor_id__in=aliases).delete()
        written += len(profiles)
    return written


def profiles_apply(*, client_id: int, tallies: dict[str, ProfileTally], recompute: set[str]) -> int:
    """The profiles of visitors whose events were just loaded (in the loader's transaction).

    A visitor seen for the first time (no profile, not joined to another visitor, none joined to
    it, all its events new and in its tally) gets the profile its tally makes: nothing about it
    is in the database to read. Every other one, and those in `recompute`, is recomputed from
    all its events in the database (profiles_rebuild). Either way the profile is the one a
    rebuild from the events gives (tests/aggregation/test_profiles_rebuild.py compares them).
    """
    if not tallies and not recompute:
        return 0
    now = timezone.now()
    idle = timedelta(minutes=settings.SESSION_IDLE_MINUTES)
    visitor_ids = [*tallies, *(recompute - tallies.keys())]
    identities_lock(client_id, exclusive=False)
    links = _links_of(client_id, visitor_ids)
    # Every bucket this transaction needs, in one ascending sweep (profiles_rebuild's own lock
    # below then takes nothing new), so that two loaders never wait on each other in a cycle.
    _visitors_lock(client_id, [*visitor_ids, *links.values()])
    known = recompute | links.keys() | set(_links_to(client_id, visitor_ids).values())
    known |= _profiles_among(client_id, [v for v in tallies if v not in known])
    fresh = [visitor_id for visitor_id in tallies if visitor_id not in known]
    profiles = []
    seen = []
    for visitor_id in fresh:
        tally = tallies[visitor_id]
        totals = tally.totals(now=now, idle=idle)
        profiles.append(
            Profile(client_id=client_id, visitor_id=visitor_id, **profile_finish(totals))
        )
        seen.append(
            VisitorSeen(
                visitor_id=visitor_id,
                first_seen_at=totals.first_seen_at,
                last_seen_at=totals.last_seen_at,
                session_id=tally.latest_session_id,
            )
        )
    _profiles_upsert(profiles, computed_at=now)
    visitors_upsert(client_id=client_id, visitors=seen)
    rest = set(visitor_ids) - set(fresh)
    return len(profiles) + (profiles_rebuild(client_id=client_id, visitor_ids=rest) if rest else 0)


def _profiles_among(client_id: int, visitor_ids: list[str]) -> set[str]:
    """Those of these visitors who have a profile."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT visitor_id FROM aggregation_profile "
                "WHERE client_id = %s AND visitor_id = ANY(%s)",
                [client_id, visitor_ids],
            )
            return {visitor_id for (visitor_id,) in cursor.fetchall()}
    found: set[str] = set()
    for start in range(0, len(visitor_ids), 500):
        found.update(
            Profile.objects.filter(
                client_id=client_id, visitor_id__in=visitor_ids[start : start + 500]
            ).values_list("visitor_id", flat=True)
        )
    return found


def _totals_python(
    client_id: int, batch: dict[str, set[str]], *, now: datetime, idle: timedelta
) -> dict[str, ProfileTotals]:
    """The totals of a batch of profiles from their events read back (SQLite), with the
    batch's visitor rows."""
    rows = _events_of(client_id, [member for group in batch.values() for member in group])
    totals = {}
    for canonical, group in batch.items():
        events = [row for member in group for row in rows.get(member, [])]
        if events:
            totals[canonical] = profile_totals(events, now=now, idle=idle)
    visitors_upsert(
        client_id=client_id,
        visitors=[
            VisitorSeen(
                visitor_id=visitor_id,
                first_seen_at=min(row.occurred_at for row in events),
                last_seen_at=max(row.occurred_at for row in events),
                session_id=max(events, key=lambda row: row.occurred_at).session_id,
            )
            for visitor_id, events in rows.items()
        ],
    )
    return totals


# profile_totals in one statement over the events of a batch of profiles (PostgreSQL), which
# also writes the batch's visitor rows. Each clause follows a rule of profile_totals; a property
# test (tests/aggregation/test_profiles_sql.py) holds the two to the same answers.
TOTALS_SQL = """
WITH members AS (
    SELECT * FROM unnest(%(members)s::text[], %(canonicals)s::text[]) AS m (member, canonical)
), events AS MATERIALIZED (
    -- The narrow columns only: the long ones (url, referrer, properties) are read afterwards
    -- for the few events that need them (DETAILS_SQL).
    SELECT members.canonical, members.member, event.event_id, event.type, event.occurred_at,
        event.session_id,
        CASE WHEN event.session_id = '' THEN '#' || event.event_id ELSE event.session_id END
            AS session_key,
        CASE WHEN event.order_id = '' THEN '#' || event.event_id ELSE event.order_id END
            AS order_key,
        event.value, event.email, event.product_id, event.category
    FROM aggregation_event AS event JOIN members ON members.member = event.visitor_id
    WHERE event.client_id = %(client_id)s AND event.visitor_id = ANY(%(members)s::text[])
), visitors AS (
    INSERT INTO delivery_visitor (client_id, visitor_id, first_seen_at, last_seen_at, cookie_data)
    SELECT %(client_id)s, latest.member, seen.first_seen_at, latest.occurred_at,
        jsonb_build_object('visitor', latest.member, 'session', latest.session_id)
    FROM (
        SELECT DISTINCT ON (member) member, occurred_at, session_id FROM events
        ORDER BY member, occurred_at DESC, event_id DESC
    ) AS latest
    JOIN (SELECT member, min(occurred_at) AS first_seen_at FROM events GROUP BY member) AS seen
        USING (member)
    ON CONFLICT (client_id, visitor_id) DO UPDATE SET
        first_seen_at = EXCLUDED.first_seen_at, last_seen_at = EXCLUDED.last_seen_at,
        cookie_data = EXCLUDED.cookie_data
), sessions AS (
    SELECT canonical, count(*) AS visits,
        count(*) FILTER (WHERE has_cart AND NOT has_purchase AND ended_at < %(ended_before)s)
            AS cart_abandonments
    FROM (
        SELECT canonical, bool_or(type = 'cart_add') AS has_cart,
            bool_or(type = 'purchase') AS has_purchase, max(occurred_at) AS ended_at
        FROM events GROUP BY canonical, session_key
    ) AS session
    GROUP BY canonical
), orders AS (
    SELECT canonical, count(*) AS purchases, sum(value) AS total_spent
    FROM (
        SELECT DISTINCT ON (canonical, order_key) canonical, coalesce(value, 0) AS value
        FROM events WHERE type = 'purchase'
        ORDER BY canonical, order_key, occurred_at DESC, event_id DESC
    ) AS purchase_order
    GROUP BY canonical
), products AS (
    SELECT canonical, count(*) AS products_viewed
    FROM (
        SELECT DISTINCT canonical, product_id FROM events
        WHERE type = 'product_view' AND product_id <> ''
    ) AS product
    GROUP BY canonical
), categories AS (
    SELECT canonical, jsonb_object_agg(category, views) AS categories
    FROM (
        SELECT canonical, category, count(*) AS views FROM events
        WHERE type IN ('product_view', 'category_view') AND category <> ''
        GROUP BY canonical, category
    ) AS category_views
    GROUP BY canonical
), emails AS (
    SELECT DISTINCT ON (canonical) canonical, email FROM events WHERE email <> ''
    ORDER BY canonical, occurred_at DESC, event_id DESC
), customs AS (
    SELECT canonical, array_agg(event_id ORDER BY occurred_at, event_id) AS custom_event_ids
    FROM events WHERE type = 'custom' GROUP BY canonical
), landings AS (
    SELECT DISTINCT ON (canonical) canonical, event_id AS landing_event_id FROM events
    ORDER BY canonical, type = 'delivery', occurred_at, event_id
), counts AS (
    SELECT canonical,
        count(*) FILTER (WHERE type = 'page_view') AS page_views,
        count(*) FILTER (WHERE type = 'product_view') AS product_views,
        count(*) FILTER (WHERE type = 'cart_add') AS cart_adds,
        count(*) FILTER (WHERE type = 'cart_remove') AS cart_removes,
        min(occurred_at) AS first_seen_at, max(occurred_at) AS last_seen_at
    FROM events GROUP BY canonical
)
SELECT counts.canonical, sessions.visits, sessions.cart_abandonments,
    counts.page_views, counts.product_views, coalesce(products.products_viewed, 0),
    counts.cart_adds, counts.cart_removes,
    coalesce(orders.purchases, 0), coalesce(orders.total_spent, 0),
    coalesce(categories.categories, '{}'::jsonb), coalesce(emails.email, ''),
    coalesce(customs.custom_event_ids, '{}'), landings.landing_event_id,
    counts.first_seen_at, counts.last_seen_at
FROM counts
    JOIN sessions USING (canonical)
    JOIN landings USING (canonical)
    LEFT JOIN products USING (canonical)
    LEFT JOIN orders USING (canonical)
    LEFT JOIN categories USING (canonical)
    LEFT JOIN emails USING (canonical)
    LEFT JOIN customs USING (canonical)
"""
# The columns of TOTALS_SQL after the visitor id, up to the categories.
TOTALS_COUNTS = [
    "visits",
    "cart_abandonments",
    "page_views",
    "product_views",
    "products_viewed",
    "cart_adds",
    "cart_removes",
    "purchases",
    "total_spent",
]
DETAILS_SQL = """
SELECT event_id, url, referrer, properties FROM aggregation_event
WHERE client_id = %(client_id)s AND event_id = ANY(%(event_ids)s::uuid[])
"""


def _totals_sql(
    client_id: int, batch: dict[str, set[str]], *, now: datetime, idle: timedelta
) -> dict[str, ProfileTotals]:
    pairs = [(member, canonical) for canonical, group in batch.items() for member in group]
    with connection.cursor() as cursor:
        # Every join of TOTALS_SQL is between sets of thousands of rows; planned on estimates
        # (a table not analyzed yet) PostgreSQL chose nested loops and took seconds for a few
        # hundred events. Compiling it (JIT) took longer than running it: 1.3 s of 3.4 s.
        cursor.execute("SET LOCAL enable_nestloop = off")
        cursor.execute("SET LOCAL jit = off")
        cursor.execute(
            TOTALS_SQL,
            {
                "client_id": client_id,
                "members": [member for member, _ in pairs],
                "canonicals": [canonical for _, canonical in pairs],
                "ended_before": now - idle,
            },
        )
        rows = cursor.fetchall()
        cursor.execute("SET LOCAL enable_nestloop TO DEFAULT")
        cursor.execute("SET LOCAL jit TO DEFAULT")
        event_ids = [event_id for row in rows for event_id in (*row[12], row[13])]
        cursor.execute(DETAILS_SQL, {"client_id": client_id, "event_ids": event_ids})
        details = {event_id: rest for event_id, *rest in cursor.fetchall()}
    totals = {}
    for row in rows:
        canonical, *counts, categories, email, custom_event_ids, landing_event_id = row[:-2]
        landing_url, landing_referrer, _ = details[landing_event_id]
        totals[canonical] = ProfileTotals(
            **dict(zip(TOTALS_COUNTS, counts, strict=True)),
            # Django hands jsonb over as text (it decodes JSON fields itself).
            categories=orjson.loads(categories),
            email=email,
            custom_properties=[
                properties
                for properties in (
                    orjson.loads(details[event_id][2]) for event_id in custom_event_ids
                )
                if properties
            ],
            landing_url=landing_url,
            landing_referrer=landing_referrer,
            first_seen_at=row[-2],
            last_seen_at=row[-1],
        )
    return totals


def _links_of(client_id: int, visitor_ids: Collection[str]) -> dict[str, str]:
    """alias -> canonical for those of these visitors joined to another."""
    return _links(client_id, "visitor_id", visitor_ids)


def _links_to(client_id: int, canonicals: Collection[str]) -> dict[str, str]:
    """alias -> canonical for the visitors joined to these."""
    return _links(client_id, "canonical_id", canonicals)


def _links(client_id: int, column: str, visitor_ids: Collection[str]) -> dict[str, str]:
    if not visitor_ids:
        return {}
    if connection.vendor == "postgresql":
        # = ANY(array): one parameter, where IN (...) would be one per visitor (100,000).
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT visitor_id, canonical_id FROM aggregation_visitorlink "
                f"WHERE client_id = %s AND {column} = ANY(%s)",
                [client_id, list(visitor_ids)],
            )
            return dict(cursor.fetchall())
    ordered = list(visitor_ids)
    found: dict[str, str] = {}
    for start in range(0, len(ordered), 500):
        found.update(
            VisitorLink.objects.filter(
                client_id=client_id, **{f"{column}__in": ordered[start : start + 500]}
            ).values_list("visitor_id", "canonical_id")
        )
    return found


EVENT_ROW_FIELDS = list(EventRow._fields)


def _events_of(client_id: int, visitor_ids: list[str]) -> dict[str, list[EventRow]]:
    """The events of these visitors, as EventRows; on PostgreSQL read without the ORM's
    per-row conversions (a third of the time of a consolidation otherwise)."""
    rows: dict[str, list[EventRow]] = defaultdict(list)
    if connection.vendor != "postgresql":
        events = Event.objects.filter(client_id=client_id, visitor_id__in=visitor_ids)
        for event in events.values("visitor_id", *EVENT_ROW_FIELDS):
            rows[event.pop("visitor_id")].append(EventRow(**event))
        return rows
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT visitor_id, {', '.join(EVENT_ROW_FIELDS)} FROM aggregation_event "
            "WHERE client_id = %s AND visitor_id = ANY(%s)",
            [client_id, visitor_ids],
        )
        for visitor_id, *values in cursor.fetchall():
            row = EventRow(*values)
            # Django reads jsonb as text (it decodes JSON fields itself).
            if isinstance(row.properties, str):
                row = row._replace(properties=orjson.loads(row.properties))
            rows[visitor_id].append(row)
    return rows


def _profiles_upsert(profiles: list[Profile], *, computed_at: datetime) -> None:
    # updated_at is when the profile was computed (settling compares it with the session's end).
    if connection.vendor != "postgresql":
        Profile.objects.bulk_create(
            profiles,
            update_conflicts=True,
            unique_fields=["client", "visitor_id"],
            update_fields=PROFILE_FIELDS,
        )
        return
    columns = ["client_id", "visitor_id", *PROFILE_FIELDS]
    json_columns = {"categories", "attributes"}
    values = [
        [
            computed_at
            if name == "updated_at"
            else Json(getattr(profile, name))
            if name in json_columns
            else getattr(profile, name)
            for name in columns
        ]
        for profile in profiles
    ]
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in PROFILE_FIELDS)
    with connection.cursor() as cursor:
        execute_values(
            cursor.cursor,
            f"INSERT INTO aggregation_profile ({', '.join(columns)}) VALUES %s "
            f"ON CONFLICT (client_id, visitor_id) DO UPDATE SET {updates}",
            values,
            page_size=1000,
        )


PROFILE_FIELDS = [
    "visits",
    "page_views",
    "product_views",
    "products_viewed",
    "categories",
    "cart_adds",
    "cart_removes",
    "cart_abandonments",
    "purchases",
    "total_spent",
    "average_order_value",
    "source",
    "email",
    "attributes",
    "first_seen_at",
    "last_seen_at",
    "updated_at",
]


def profiles_rebuild_all(*, client_id: int | None = None) -> int:
    """Recompute every profile (of one client, or all) from its events, a client at a time.

    Memory: one client's distinct visitor ids (~100 bytes each) plus one PROFILE_BATCH of
    visitors' events at a time. A visitor joined to another counts in the canonical profile,
    whichever slice it falls in.
    """
    events = Event.objects.all() if client_id is None else Event.objects.filter(client_id=client_id)
    rebuilt = 0
    for owner in sorted(set(events.values_list("client_id", flat=True).distinct())):
        visitor_ids = sorted(
            set(Event.objects.filter(client_id=owner).values_list("visitor_id", flat=True))
        )
        # Slices of visitors, each its own transaction: consolidation waits for one slice's
        # locks at most, not for the whole rebuild.
        for start in range(0, len(visitor_ids), PROFILES_PER_TRANSACTION):
            with transaction.atomic():
                rebuilt += profiles_rebuild(
                    client_id=owner,
                    visitor_ids=set(visitor_ids[start : start + PROFILES_PER_TRANSACTION]),
                )
    return rebuilt


def profiles_settle(*, now: datetime, since: datetime | None = None) -> int:
    """Recompute the profiles whose last session ended (went idle) since `since`: their cart,
    if any, now counts as abandoned. Only those, so each run costs what changed since the last.
    """
    idle = timedelta(minutes=settings.SESSION_IDLE_MINUTES)
    since = since or now - timedelta(days=1)
    candidates = Profile.objects.filter(
        last_seen_at__lte=now - idle,
        last_seen_at__gt=since - idle,
        cart_adds__gt=0,
        # One computed after its last session ended counted that cart already.
        updated_at__lte=F("last_seen_at") + idle,
    ).values_list("client_id", "visitor_id")
    by_client: dict[int, set[str]] = defaultdict(set)
    for client_id, visitor_id in candidates:
        by_client[client_id].add(visitor_id)
    settled = 0
    for client_id, visitor_ids in sorted(by_client.items()):
        ordered = sorted(visitor_ids)
        for start in range(0, len(ordered), PROFILES_PER_TRANSACTION):
            with transaction.atomic():
                settled += profiles_rebuild(
                    client_id=client_id,
                    visitor_ids=set(ordered[start : start + PROFILES_PER_TRANSACTION]),
                )
    return settled
