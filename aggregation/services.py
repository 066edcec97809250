"""Ingest, consolidation and profiles (A1-A3, A5)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from aggregation import spool
from aggregation.models import ConsolidationRun, Event, Profile
from aggregation.profiles import EventRow, profile_compute
from aggregation.records import RecordError, event_from_tag, record_parse
from coremetrics.models import Client
from delivery.models import Visitor

logger = logging.getLogger(__name__)

# One file is loaded in one transaction; profiles are recomputed in slices of this many
# visitors (one query each, about 1 KB of memory per event read).
PROFILE_BATCH = 500

EVENT_COLUMNS = [
    "event_id",
    "client_id",
    "type",
    "visitor_id",
    "session_id",
    "occurred_at",
    "received_at",
    "url",
    "referrer",
    "campaign_key",
    "placement_key",
    "content_id",
    "table_version",
    "product_id",
    "order_id",
    "value",
    "currency",
    "email",
    "properties",
]
TEXT_COLUMNS = [
    "type",
    "visitor_id",
    "session_id",
    "url",
    "referrer",
    "campaign_key",
    "placement_key",
    "product_id",
    "order_id",
    "currency",
    "email",
]


class BatchError(ValueError):
    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def events_collect(
    *,
    client_id: int,
    visitor_id: str,
    session_id: str,
    sent_at_ms: float,
    events: list,
    received_at: datetime,
) -> int:
    """Validate a batch from the tag and spool it whole; raises BatchError, or OSError."""
    records, errors = [], []
    for index, event in enumerate(events):
        try:
            records.append(
                event_from_tag(
                    event,
                    client_id=client_id,
                    visitor_id=visitor_id,
                    session_id=session_id,
                    sent_at_ms=sent_at_ms,
                    received_at=received_at,
                )
            )
        except RecordError as error:
            errors.append(f"events[{index}]: {error}")
    if errors:
        raise BatchError(errors)
    spool.spool_append(records)
    return len(records)


@dataclass
class FileResult:
    lines: int = 0
    loaded: int = 0
    duplicates: int = 0
    bad_lines: int = 0
    profiles: int = 0


def spool_consolidate(*, seal_open: bool = True) -> ConsolidationRun:
    """Load every closed spool file into the database, archive it, and update profiles."""
    run = ConsolidationRun.objects.create()
    try:
        if seal_open:
            spool.spool_seal_open()
        for path in spool.spool_closed_files():
            result = spool_file_load(path)
            run.files += 1
            run.lines += result.lines
            run.loaded += result.loaded
            run.duplicates += result.duplicates
            run.bad_lines += result.bad_lines
            run.profiles_updated += result.profiles
        run.profiles_updated += profiles_settle(now=timezone.now())
        run.status = ConsolidationRun.Status.DONE
    except Exception as error:
        logger.exception("consolidation failed")
        run.status = ConsolidationRun.Status.FAILED
        run.error = f"{type(error).__name__}: {error}"
    run.finished_at = timezone.now()
    run.save()
    return run


def spool_file_load(path: Path) -> FileResult:
    """Archive one closed file, load it and its visitors' profiles in one transaction, remove it.

    A crash anywhere leaves the file in closed/; the next run loads it again and the unique
    event ids make that second load add nothing.
    """
    paths = spool.spool_paths()
    result = FileResult()
    records, dead = [], []
    with path.open("rb") as file:
        for number, line in enumerate(file, start=1):
            result.lines += 1
            try:
                records.append(record_parse(line))
            except RecordError as error:
                dead.append((number, str(error), line))
    known_clients = set(
        Client.objects.filter(pk__in={record["client"] for record in records}).values_list(
            "pk", flat=True
        )
    )
    for record in [record for record in records if record["client"] not in known_clients]:
        dead.append((0, f"unknown client {record['client']}", b""))
        records.remove(record)
    _archive(path, paths["archive"])
    if dead:
        _dead_letter(path.name, dead, paths["dead"])
    result.bad_lines = len(dead)
    with transaction.atomic():
        result.loaded = events_load(records)
        result.duplicates = len(records) - result.loaded
        touched: dict[int, set[str]] = defaultdict(set)
        for record in records:
            touched[record["client"]].add(record["visitor_id"])
        for client_id, visitor_ids in touched.items():
            result.profiles += profiles_rebuild(client_id=client_id, visitor_ids=visitor_ids)
    path.unlink()
    return result


def _archive(path: Path, archive_dir: Path) -> None:
    archive_dir.mkdir(parents=True, exist_ok=True)
    target = archive_dir / f"{path.name}.gz"
    temporary = archive_dir / f".{path.name}.gz.tmp"
    with path.open("rb") as source, gzip.open(temporary, "wb") as sink:
        shutil.copyfileobj(source, sink)
    os.replace(temporary, target)


def _dead_letter(name: str, dead: list[tuple[int, str, bytes]], dead_dir: Path) -> None:
    dead_dir.mkdir(parents=True, exist_ok=True)
    with (dead_dir / f"{name}.dead").open("ab") as file:
        for number, reason, line in dead:
            file.write(f"line {number}: {reason}\t".encode() + line.rstrip(b"\n") + b"\n")


def events_load(records: list[dict]) -> int:
    """Insert records, skipping event ids already present; returns how many were new."""
    if not records:
        return 0
    if connection.vendor == "postgresql":
        return _events_copy(records)
    ids = [record["event_id"] for record in records]
    present = set()
    for start in range(0, len(ids), 500):
        present |= {
            str(event_id)
            for event_id in Event.objects.filter(event_id__in=ids[start : start + 500]).values_list(
                "event_id", flat=True
            )
        }
    new = {record["event_id"]: record for record in records if record["event_id"] not in present}
    Event.objects.bulk_create(
        [
            Event(client_id=record["client"], **{k: v for k, v in record.items() if k != "client"})
            for record in new.values()
        ],
        batch_size=500,
        ignore_conflicts=True,
    )
    return len(new)


def _events_copy(records: list[dict]) -> int:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for record in records:
        row = {**record, "client_id": record["client"]}
        row["properties"] = _json(record["properties"])
        writer.writerow(["" if row[name] is None else row[name] for name in EVENT_COLUMNS])
    buffer.seek(0)
    columns = ", ".join(EVENT_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE event_stage ON COMMIT DROP AS "
            f"SELECT {columns} FROM aggregation_event WITH NO DATA"
        )
        cursor.copy_expert(
            f"COPY event_stage ({columns}) FROM STDIN WITH (FORMAT csv, "
            f"FORCE_NOT_NULL ({', '.join(TEXT_COLUMNS)}))",
            buffer,
        )
        # A file can hold one event id twice (a retried batch inside one file): keep the first.
        cursor.execute(
            f"INSERT INTO aggregation_event ({columns}) "
            f"SELECT DISTINCT ON (event_id) {columns} FROM event_stage "
            f"ON CONFLICT (event_id) DO NOTHING"
        )
        loaded = cursor.rowcount
        cursor.execute("DROP TABLE event_stage")
    return loaded


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def profiles_rebuild(*, client_id: int, visitor_ids: set[str]) -> int:
    """Recompute the profiles (and visitor rows) of these visitors from all their events."""
    now = timezone.now()
    idle = timedelta(minutes=settings.SESSION_IDLE_MINUTES)
    ordered = sorted(visitor_ids)
    written = 0
    for start in range(0, len(ordered), PROFILE_BATCH):
        batch = ordered[start : start + PROFILE_BATCH]
        rows: dict[str, list[EventRow]] = defaultdict(list)
        for event in Event.objects.filter(client_id=client_id, visitor_id__in=batch).values(
            "visitor_id", *EventRow.__dataclass_fields__
        ):
            rows[event.pop("visitor_id")].append(EventRow(**event))
        profiles = [
            Profile(
                client_id=client_id,
                visitor_id=visitor_id,
                **profile_compute(events, now=now, idle=idle),
            )
            for visitor_id, events in rows.items()
        ]
        Profile.objects.bulk_create(
            profiles,
            update_conflicts=True,
            unique_fields=["client", "visitor_id"],
            update_fields=PROFILE_FIELDS,
        )
        Visitor.objects.bulk_create(
            [
                Visitor(
                    client_id=client_id,
                    visitor_id=profile.visitor_id,
                    first_seen_at=profile.first_seen_at,
                    last_seen_at=profile.last_seen_at,
                    cookie_data={"session": _last_session(rows[profile.visitor_id])},
                )
                for profile in profiles
            ],
            update_conflicts=True,
            unique_fields=["client", "visitor_id"],
            update_fields=["first_seen_at", "last_seen_at", "cookie_data"],
        )
        written += len(profiles)
    return written


PROFILE_FIELDS = [
    "visits",
    "page_views",
    "product_views",
    "cart_adds",
    "cart_removes",
    "cart_abandonments",
    "purchases",
    "total_spent",
    "source",
    "email",
    "first_seen_at",
    "last_seen_at",
    "updated_at",
]


def _last_session(events: list[EventRow]) -> str:
    return max(events, key=lambda row: row.occurred_at).session_id


def profiles_settle(*, now: datetime) -> int:
    """Recompute profiles whose carts may have been abandoned since their last event."""
    idle = timedelta(minutes=settings.SESSION_IDLE_MINUTES)
    candidates = Profile.objects.filter(
        last_seen_at__lte=now - idle,
        last_seen_at__gte=now - idle - timedelta(days=1),
        cart_adds__gt=0,
    ).values_list("client_id", "visitor_id")
    by_client: dict[int, set[str]] = defaultdict(set)
    for client_id, visitor_id in candidates:
        by_client[client_id].add(visitor_id)
    settled = 0
    for client_id, visitor_ids in by_client.items():
        with transaction.atomic():
            settled += profiles_rebuild(client_id=client_id, visitor_ids=visitor_ids)
    return settled
