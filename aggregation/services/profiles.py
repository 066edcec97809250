"""Profiles from events (A5) and identity stitching (B5): recomputation, locks, settling."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timedelta

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Min
from django.db.models.functions import Lower
from django.utils import timezone
from psycopg2.extras import Json, execute_values

from aggregation.models import Event, Profile, VisitorLink
from aggregation.profiles import EventRow, profile_compute
from delivery.services import VisitorSeen, visitors_upsert

logger = logging.getLogger(__name__)

# Profiles are recomputed in slices of this many visitors (one query each, about 1 KB of memory
# per event read).
PROFILE_BATCH = 500
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


# At most this many visitors are joined under one email: a shared address (a shop's kiosk,
# a typo'd or made-up one) must not fuse strangers into one profile. Beyond it, none joins.
MAX_JOINED = 20
PLACEHOLDER_LOCAL_PARTS = {"none", "noreply", "no-reply", "null", "na", "n/a", "test", "unknown"}


def identities_stitch(*, client_id: int, emails: dict[str, str]) -> set[str]:
    """Join visitors who gave the same email under one profile (B5; docs/aggregation.md).

    The visitor seen first becomes (or stays) canonical; every other visitor with that email,
    and every visitor already linked to one of them, is linked to it. Returns the canonical
    visitors whose profiles must be recomputed.
    """
    _identities_lock(client_id, exclusive=True)
    by_email: dict[str, set[str]] = defaultdict(set)
    for visitor_id, email in emails.items():
        if email.split("@")[0] not in PLACEHOLDER_LOCAL_PARTS:
            by_email[email].add(visitor_id)
    # One query for every address of the file (an index on the client and lower(email)).
    known = (
        Profile.objects.filter(client_id=client_id)
        .annotate(lower_email=Lower("email"))
        .filter(lower_email__in=list(by_email))
        .values_list("lower_email", "visitor_id")
    )
    for email, visitor_id in known:
        by_email[email].add(visitor_id)
    joined: set[str] = set()
    for email, visitor_ids in by_email.items():
        links = dict(
            VisitorLink.objects.filter(client_id=client_id, visitor_id__in=visitor_ids).values_list(
                "visitor_id", "canonical_id"
            )
        )
        canonicals = {links.get(visitor_id, visitor_id) for visitor_id in visitor_ids}
        if len(canonicals) < 2:
            continue
        group = VisitorLink.objects.filter(client_id=client_id, canonical_id__in=canonicals)
        if len(canonicals) + group.count() > MAX_JOINED:
            logger.warning("not joining the visitors of %s: more than %d", email, MAX_JOINED)
            continue
        seen = dict(
            Event.objects.filter(client_id=client_id, visitor_id__in=canonicals)
            .values("visitor_id")
            .annotate(first=Min("occurred_at"))
            .values_list("visitor_id", "first")
        )
        chosen = min(canonicals, key=lambda v: (seen.get(v) or timezone.now(), v))
        others = canonicals - {chosen}
        VisitorLink.objects.filter(client_id=client_id, canonical_id__in=others).update(
            canonical_id=chosen
        )
        VisitorLink.objects.bulk_create(
            [
                VisitorLink(client_id=client_id, visitor_id=v, canonical_id=chosen, email=email)
                for v in others
            ],
            update_conflicts=True,
            unique_fields=["client", "visitor_id"],
            update_fields=["canonical_id", "email", "linked_at"],
        )
        Profile.objects.filter(client_id=client_id, visitor_id__in=others).delete()
        joined.add(chosen)
    return joined


def identities_separate(*, links: list[VisitorLink]) -> int:
    """Undo joins: each visitor gets its own profile again, the canonical one is recomputed.

    A separated visitor could be joined again by a later event with the same email; the link
    is what a marketer removes when the join was wrong (a shared or mistyped address).
    """
    separated = 0
    for client_id in sorted({link.client_id for link in links}):
        own = [link for link in links if link.client_id == client_id]
        with transaction.atomic():
            _identities_lock(client_id, exclusive=True)
            VisitorLink.objects.filter(pk__in=[link.pk for link in own]).delete()
            touched = {link.visitor_id for link in own} | {link.canonical_id for link in own}
            profiles_rebuild(client_id=client_id, visitor_ids=touched)
        separated += len(own)
    return separated


def _identities_lock(client_id: int, *, exclusive: bool) -> None:
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
    _identities_lock(client_id, exclusive=False)
    links = _links_of(client_id, visitor_ids)
    canonicals = sorted({links.get(visitor_id, visitor_id) for visitor_id in visitor_ids})
    members: dict[str, set[str]] = {canonical: {canonical} for canonical in canonicals}
    for alias, canonical in _links_to(client_id, canonicals).items():
        members[canonical].add(alias)
    written = 0
    _visitors_lock(client_id, canonicals)
    for start in range(0, len(canonicals), PROFILE_BATCH):
        batch = canonicals[start : start + PROFILE_BATCH]
        member_ids = [member for canonical in batch for member in members[canonical]]
        rows = _events_of(client_id, member_ids)
        merged: dict[str, list[EventRow]] = defaultdict(list)
        for canonical in batch:
            for member in members[canonical]:
                merged[canonical] += rows.get(member, [])
        profiles = [
            Profile(
                client_id=client_id,
                visitor_id=visitor_id,
                **profile_compute(events, now=now, idle=idle),
            )
            for visitor_id, events in merged.items()
            if events
        ]
        _profiles_upsert(profiles)
        # A joined visitor counts in its canonical profile only (whatever raced to write it).
        aliases = [member for member in member_ids if member not in members]
        Profile.objects.filter(client_id=client_id, visitor_id__in=aliases).delete()
        visitors_upsert(
            client_id=client_id,
            visitors=[
                VisitorSeen(
                    visitor_id=visitor_id,
                    first_seen_at=min(row.occurred_at for row in events),
                    last_seen_at=max(row.occurred_at for row in events),
                    session_id=_last_session(events),
                )
                for visitor_id, events in rows.items()
            ],
        )
        written += len(profiles)
    return written


def _links_of(client_id: int, visitor_ids: set[str]) -> dict[str, str]:
    return dict(
        VisitorLink.objects.filter(client_id=client_id, visitor_id__in=visitor_ids).values_list(
            "visitor_id", "canonical_id"
        )
    )


def _links_to(client_id: int, canonicals: list[str]) -> dict[str, str]:
    return dict(
        VisitorLink.objects.filter(client_id=client_id, canonical_id__in=canonicals).values_list(
            "visitor_id", "canonical_id"
        )
    )


EVENT_ROW_FIELDS = list(EventRow.__dataclass_fields__)


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
                row = replace(row, properties=orjson.loads(row.properties))
            rows[visitor_id].append(row)
    return rows


def _profiles_upsert(profiles: list[Profile]) -> None:
    if connection.vendor != "postgresql":
        Profile.objects.bulk_create(
            profiles,
            update_conflicts=True,
            unique_fields=["client", "visitor_id"],
            update_fields=PROFILE_FIELDS,
        )
        return
    now = timezone.now()
    columns = ["client_id", "visitor_id", *PROFILE_FIELDS]
    json_columns = {"categories", "attributes"}
    values = [
        [
            now
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


def _last_session(events: list[EventRow]) -> str:
    return max(events, key=lambda row: row.occurred_at).session_id


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
