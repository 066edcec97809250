"""Profiles from events (A5) and identity stitching (B5): recomputation, locks, settling."""

from __future__ import annotations

import gc
import logging
from collections import defaultdict
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from aggregation.models import Event, Profile, VisitorLink
from aggregation.profiles import (
    EventRow,
    ProfileTally,
    profile_finish,
)
from coremetrics.bulk import copy_line, lines_insert, lines_upsert
from delivery.services import VisitorSeen, visitors_upsert

logger = logging.getLogger(__name__)

# Profiles are recomputed in slices of this many visitors, their events streamed through one
# query (memory: a tally per visitor).
PROFILE_BATCH = 5_000
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
    for start in range(0, len(canonicals), PROFILE_BATCH):
        batch = {
            canonical: members[canonical] for canonical in canonicals[start : start + PROFILE_BATCH]
        }
        tallies, seen = _tallies_read(client_id, batch)
        written += _profiles_write(client_id, tallies, now=now, idle=idle)
        visitors_upsert(client_id=client_id, visitors=seen)
        # A joined visitor counts in its canonical profile only (whatever raced to write it).
        aliases = [member for group in batch.values() for member in group if member not in members]
        Profile.objects.filter(client_id=client_id, visitor_id__in=aliases).delete()
    return written


@dataclass
class EarlyProfiles:
    """The COPY lines of profiles of visitors who had none, made before any of their locks
    was taken (profiles_made_early), and the time they were made."""

    now: datetime
    lines: dict[str, str]


def profiles_made_early(
    *, client_id: int, tallies: dict[str, ProfileTally], recompute: set[str]
) -> EarlyProfiles:
    """Make the profiles of these visitors who have none yet (most, in a file of new visitors)
    before the locks are taken, so that a loader holds its visitors' locks, which other loaders
    may be waiting for, only to write. profiles_apply decides under the locks which of them
    are still new (one given a profile meanwhile is merged instead)."""
    now = timezone.now()
    idle = timedelta(minutes=settings.SESSION_IDLE_MINUTES)
    candidates = [v for v, tally in tallies.items() if tally and v not in recompute]
    # SQLite has one writer at a time: nothing to make early.
    if connection.vendor != "postgresql" or not candidates:
        return EarlyProfiles(now=now, lines={})
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT visitor_id FROM aggregation_profile "
            "WHERE client_id = %s AND visitor_id = ANY(%s)",
            [client_id, candidates],
        )
        present = {visitor_id for (visitor_id,) in cursor.fetchall()}
    lines = {
        visitor_id: _profile_line(
            client_id, _profile_of(visitor_id, tallies[visitor_id], now=now, idle=idle)
        )
        for visitor_id in candidates
        if visitor_id not in present
    }
    return EarlyProfiles(now=now, lines=lines)


def profiles_apply(
    *,
    client_id: int,
    tallies: dict[str, ProfileTally],
    recompute: set[str],
    early: EarlyProfiles | None = None,
) -> int:
    """The profiles of visitors whose events were just loaded (in the loader's transaction),
    given the tally of those events per visitor.

    A visitor seen for the first time (no profile) gets the profile its tally makes; a known
    one, the profile of its kept tally merged with the new one. Nothing of their history is
    read. Visitors joined to others (or others to them), visitors in `recompute` (some of
    whose events were there already) and those whose tally is not kept (too many entries) are
    recomputed from all their events (profiles_rebuild). Either way the profile is the one a
    rebuild from the events gives (tests/aggregation/test_profiles_rebuild.py compares them).

    "No profile" meaning "no events before" holds because events and their profiles are written
    in one transaction, and a profile is only ever deleted as a joined visitor's (recomputed
    here, as aliases are); a profile deleted by hand in the database is brought back right by
    `manage.py rebuild_profiles`.
    """
    if not tallies and not recompute:
        return 0
    if early is None:
        early = profiles_made_early(client_id=client_id, tallies=tallies, recompute=recompute)
    now = early.now
    idle = timedelta(minutes=settings.SESSION_IDLE_MINUTES)
    visitor_ids = [*tallies, *(recompute - tallies.keys())]
    identities_lock(client_id, exclusive=False)
    links = _links_of(client_id, visitor_ids)
    # Every bucket this transaction needs, in one ascending sweep (profiles_rebuild's own lock
    # below then takes nothing new), so that two loaders never wait on each other in a cycle.
    _visitors_lock(client_id, [*visitor_ids, *links.values()])
    rest = recompute | links.keys() | set(_links_to(client_id, visitor_ids).values())
    kept = _tallies_kept(client_id, [v for v in tallies if v not in rest])
    fresh: dict[str, ProfileTally] = {}
    merged: dict[str, ProfileTally] = {}
    for visitor_id, tally in tallies.items():
        if visitor_id in rest:
            continue
        if visitor_id not in kept:
            if tally:
                fresh[visitor_id] = tally
            else:  # nothing new, and no profile: nothing to write
                rest.add(visitor_id)
        elif (state := kept[visitor_id]) is not None:
            merged[visitor_id] = ProfileTally.from_state(state).merge(tally)
        else:
            rest.add(visitor_id)
    written = _profiles_write(client_id, fresh, now=now, idle=idle, are_new=True, lines=early.lines)
    written += _profiles_write(client_id, merged, now=now, idle=idle)
    visitors_upsert(
        client_id=client_id,
        visitors=[_visitor_seen(v, tally) for v, tally in [*fresh.items(), *merged.items()]],
    )
    if rest:
        written += profiles_rebuild(client_id=client_id, visitor_ids=rest)
    return written


def profiles_refinish(*, client_id: int, visitor_ids: set[str]) -> int:
    """Finish these visitors' profiles again, now (a cart of a session that has ended since
    counts as abandoned), from their kept tallies: no event is read but for a profile whose
    tally is not kept."""
    return profiles_apply(
        client_id=client_id,
        tallies={visitor_id: ProfileTally() for visitor_id in visitor_ids},
        recompute=set(),
    )


def _tallies_kept(client_id: int, visitor_ids: list[str]) -> dict[str, dict | None]:
    """The kept tally of each of these visitors who has a profile (None: not kept)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT visitor_id, tally FROM aggregation_profile "
                "WHERE client_id = %s AND visitor_id = ANY(%s)",
                [client_id, visitor_ids],
            )
            found = cursor.fetchall()
    else:
        found = [
            row
            for start in range(0, len(visitor_ids), 500)
            for row in Profile.objects.filter(
                client_id=client_id, visitor_id__in=visitor_ids[start : start + 500]
            ).values_list("visitor_id", "tally")
        ]
    return {
        visitor_id: None if tally is None else orjson.loads(tally) for visitor_id, tally in found
    }


def _profiles_write(
    client_id: int,
    tallies: dict[str, ProfileTally],
    *,
    now: datetime,
    idle: timedelta,
    are_new: bool = False,
    lines: dict[str, str] | None = None,
) -> int:
    """Write the profiles of these tallies; `are_new`: none of them has a profile yet (the caller
    holds their visitors' locks), so they are COPYed in without looking for one. `lines`: the
    COPY lines (_profile_line) of some of them, made already."""
    if not tallies:
        return 0
    if connection.vendor != "postgresql":
        Profile.objects.bulk_create(
            [
                Profile(client_id=client_id, **_profile_of(visitor_id, tally, now=now, idle=idle))
                for visitor_id, tally in tallies.items()
            ],
            update_conflicts=True,
            unique_fields=["client", "visitor_id"],
            update_fields=PROFILE_FIELDS,
        )
        return len(tallies)
    made = lines or {}
    profile_lines = (
        made.get(visitor_id)
        or _profile_line(client_id, _profile_of(visitor_id, tally, now=now, idle=idle))
        for visitor_id, tally in tallies.items()
    )
    if are_new:
        lines_insert(table="aggregation_profile", columns=PROFILE_COLUMNS, lines=profile_lines)
    else:
        lines_upsert(
            table="aggregation_profile",
            columns=PROFILE_COLUMNS,
            lines=profile_lines,
            conflict=["client_id", "visitor_id"],
            update=PROFILE_FIELDS,
        )
    return len(tallies)


def _profile_of(visitor_id: str, tally: ProfileTally, *, now: datetime, idle: timedelta) -> dict:
    """A profile's field values, finished now from its tally."""
    # updated_at is when the profile was computed (settling compares it with the session's end).
    return {
        **profile_finish(tally.totals(now=now, idle=idle)),
        "tally": _tally_text(tally.state()),
        "visitor_id": visitor_id,
        "updated_at": now,
    }


def _profile_line(client_id: int, profile: dict) -> str:
    """A profile as a COPY line, in PROFILE_COLUMNS order."""
    return copy_line(
        [
            client_id,
            *(
                _json_text(profile[name]) if name in JSON_FIELDS else profile[name]
                for name in PROFILE_COLUMNS[1:]
            ),
        ]
    )


JSON_FIELDS = {"categories", "attributes"}


# An event's time as profiles.utc_text writes it: microseconds only when there are some
# (PostgreSQL writes the text faster than Python turns datetimes into text).
UTC_TEXT_SQL = (
    "to_char(occurred_at AT TIME ZONE 'UTC', CASE WHEN date_trunc('second', occurred_at) = "
    """occurred_at THEN 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"' """
    """ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"' END)"""
)
EVENT_ROW_SQL = (
    f"type, session_id, {UTC_TEXT_SQL}, url, referrer, order_id, value, email, product_id, "
    "category, CASE WHEN type = 'custom' THEN properties END, event_id::text"
)


def _tallies_read(
    client_id: int, batch: dict[str, set[str]]
) -> tuple[dict[str, ProfileTally], list[VisitorSeen]]:
    """The tallies of a batch of profiles (canonical -> its members) from all their events,
    and the visitor row of each member. Events are streamed: memory holds the tallies."""
    canonical_of = {member: canonical for canonical, group in batch.items() for member in group}
    # The members of joined groups: each one's own events make its visitor row.
    joined = {member for group in batch.values() if len(group) > 1 for member in group}
    tallies: dict[str, ProfileTally] = {}
    own: dict[str, ProfileTally] = {}
    for visitor_id, row in _events_stream(client_id, list(canonical_of)):
        canonical = canonical_of[visitor_id]
        tally = tallies.get(canonical)
        if tally is None:
            tally = tallies[canonical] = ProfileTally()
        tally.add(row)
        if visitor_id in joined:
            member = own.get(visitor_id)
            if member is None:
                member = own[visitor_id] = ProfileTally()
            member.add(row)
    seen = [_visitor_seen(v, tally) for v, tally in own.items()]
    seen += [_visitor_seen(v, tally) for v, tally in tallies.items() if v not in joined]
    return tallies, seen


def _visitor_seen(visitor_id: str, tally: ProfileTally) -> VisitorSeen:
    """A visitor's row from the tally of its own events (never empty)."""
    return VisitorSeen(
        visitor_id=visitor_id,
        first_seen_at=tally.first_seen_at,
        last_seen_at=tally.last_seen_at,
        session_id=tally.latest_session_id,
    )


def _events_stream(client_id: int, visitor_ids: list[str]) -> Iterator[tuple[str, EventRow]]:
    """(visitor id, EventRow) of every event of these visitors, read in chunks."""
    if connection.vendor != "postgresql":
        events = Event.objects.filter(client_id=client_id, visitor_id__in=visitor_ids)
        for event in events.values("visitor_id", *EventRow._fields).iterator(chunk_size=2000):
            visitor_id = event.pop("visitor_id")
            event["event_id"] = str(event["event_id"])
            yield visitor_id, EventRow(**event)
        return
    # A server-side cursor: rows come 2,000 at a time, whatever the visitors' histories.
    cursor = connection.chunked_cursor()
    try:
        cursor.execute(
            f"SELECT visitor_id, {EVENT_ROW_SQL} FROM aggregation_event "
            "WHERE client_id = %s AND visitor_id = ANY(%s)",
            [client_id, visitor_ids],
        )
        while rows := cursor.fetchmany(2000):
            for visitor_id, *values in rows:
                if values[10] is not None:  # Django reads jsonb as text
                    values[10] = orjson.loads(values[10])
                yield visitor_id, EventRow(*values)
    finally:
        cursor.close()


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


def _json_text(value: object) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _tally_text(state: dict | None) -> str | None:
    """A kept tally as text, its keys sorted: one tally, one text, whatever order its events
    came in."""
    return None if state is None else orjson.dumps(state, option=orjson.OPT_SORT_KEYS).decode()


PROFILE_FIELDS = [
    "tally",
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
PROFILE_COLUMNS = ["client_id", "visitor_id", *PROFILE_FIELDS]


def profiles_rebuild_all(*, client_id: int | None = None) -> int:
    """Recompute every profile (of one client, or all) from its events, a client at a time.

    Memory: one client's distinct visitor ids (~100 bytes each) plus one PROFILE_BATCH of
    visitors' events at a time. A visitor joined to another counts in the canonical profile,
    whichever slice it falls in.
    """
    events = Event.objects.all() if client_id is None else Event.objects.filter(client_id=client_id)
    rebuilt = 0
    # order_by(): without it the events' default ordering joins the DISTINCT (one row per event).
    owners = events.order_by().values_list("client_id", flat=True).distinct()
    with gc_paused():
        for owner in sorted(owners):
            visitor_ids = sorted(
                Event.objects.filter(client_id=owner)
                .order_by()
                .values_list("visitor_id", flat=True)
                .distinct()
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


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while events are tallied: their rows (a few objects each,
    none in a cycle) made the collector walk ever more objects, a third of the parsing time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def profiles_settle(*, now: datetime, since: datetime | None = None) -> int:
    """Finish again the profiles whose last session ended (went idle) since `since`: their
    cart, if any, now counts as abandoned. Only those, so each run costs what changed since the
    last; from their kept tallies (profiles_refinish), without reading their events.
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
                settled += profiles_refinish(
                    client_id=client_id,
                    visitor_ids=set(ordered[start : start + PROFILES_PER_TRANSACTION]),
                )
    return settled
