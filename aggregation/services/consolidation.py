"""Ingest and consolidation (A1-A3): collect batches, the spool, loading into the database."""

from __future__ import annotations

import csv
import fcntl
import gzip
import io
import logging
import os
import shutil
import tempfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from operator import itemgetter
from pathlib import Path

import orjson
from django.conf import settings
from django.db import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    transaction,
)
from django.utils import timezone

from aggregation import spool
from aggregation.models import ConsolidationRun, Event
from aggregation.records import (
    EMAIL_TYPES,
    RecordError,
    record_parse,
)
from aggregation.services.identities import identities_stitch
from aggregation.services.imports import import_reports_prune
from aggregation.services.profiles import (
    PROFILES_PER_TRANSACTION,
    profiles_rebuild,
    profiles_settle,
)
from campaigns.mailtracking import LANDING_PARAMETER
from campaigns.services.email_tracking import email_activities_load, recipients_of_landings
from coremetrics.models import Client

logger = logging.getLogger(__name__)


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
    "category",
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
    "category",
    "order_id",
    "currency",
    "email",
]


@dataclass
class FileResult:
    lines: int = 0
    loaded: int = 0
    duplicates: int = 0
    bad_lines: int = 0
    profiles: int = 0
    client_ids: set[int] = field(default_factory=set)


# Archives favour speed: on spool lines, level 1 ran 4.7 times faster than gzip's default 9
# (50,000 lines: 0.05 s against 0.25 s) for 5.5% of the size against 4.8%.
ARCHIVE_GZIP_LEVEL = 1

# A file that fails this many runs in a row (not a bad line: those go to dead/) is set aside in
# quarantine/ so that it cannot stop consolidation of every other file.
MAX_FILE_ATTEMPTS = 3


def spool_consolidate(*, seal_open: bool = True) -> ConsolidationRun:
    """Load every closed spool file into the database, archive it, and update profiles.

    One run at a time: a run that finds another under way records itself as skipped.
    """
    run = ConsolidationRun.objects.create()
    with consolidation_lock() as is_acquired:
        if not is_acquired:
            run.status = ConsolidationRun.Status.SKIPPED
            run.error = "another consolidation was running"
        else:
            _consolidate(run, seal_open=seal_open)
    run.finished_at = timezone.now()
    run.save()
    return run


def _consolidate(run: ConsolidationRun, *, seal_open: bool) -> None:
    errors = []
    client_ids: set[int] = set()
    archives_prune(now=timezone.now())
    import_reports_prune(now=timezone.now())
    if seal_open:
        spool.spool_seal_open()
    for path in spool.spool_closed_files():
        try:
            result = spool_file_load(path=path)
        except Exception as error:
            logger.exception("could not load spool file %s", path.name)
            errors.append(f"{path.name}: {type(error).__name__}: {error}")
            # A database that is away or busy is no fault of the file: only other errors count
            # towards quarantine.
            if not isinstance(error, OperationalError | InterfaceError):
                _attempt_count(path)
            continue
        run.files += 1
        run.lines += result.lines
        run.loaded += result.loaded
        run.duplicates += result.duplicates
        run.bad_lines += result.bad_lines
        run.profiles_updated += result.profiles
        client_ids |= result.client_ids
    try:
        previous = (
            ConsolidationRun.objects.filter(status=ConsolidationRun.Status.DONE)
            .exclude(pk=run.pk)
            .order_by("-started_at")
            .first()
        )
        run.profiles_updated += profiles_settle(
            now=timezone.now(), since=previous.started_at if previous else None
        )
    except Exception as error:
        logger.exception("could not settle ended sessions")
        errors.append(f"settling sessions: {type(error).__name__}: {error}")
    run.client_ids = sorted(client_ids)
    run.status = ConsolidationRun.Status.FAILED if errors else ConsolidationRun.Status.DONE
    run.error = "\n".join(errors)


def archives_prune(*, now: datetime) -> int:
    """Delete archived spool files older than ARCHIVE_KEEP_DAYS, and archive temporaries left
    by a run that was killed (only one run per spool is under way: consolidation_lock)."""
    archive = spool.spool_paths()["archive"]
    if not archive.is_dir():
        return 0
    for leftover in archive.glob(".*"):
        leftover.unlink(missing_ok=True)
    horizon = (now - timedelta(days=settings.ARCHIVE_KEEP_DAYS)).timestamp()
    pruned = 0
    for path in archive.glob("*.gz"):
        if path.stat().st_mtime < horizon:
            path.unlink(missing_ok=True)
            pruned += 1
    return pruned


def dead_letters() -> list[dict]:
    """The dead-letter files (lines refused at loading, with reasons) and quarantined files."""
    paths = spool.spool_paths()
    found = []
    for kind in ("dead", "quarantine"):
        for path in sorted(paths[kind].glob("*")) if paths[kind].is_dir() else []:
            with path.open("rb") as file:
                lines = sum(1 for _ in file)
            found.append(
                {
                    "kind": kind,
                    "name": path.name,
                    "lines": lines,
                    "modified_at": datetime.fromtimestamp(path.stat().st_mtime, tz=UTC),
                }
            )
    return found


def dead_letter_path(*, kind: str, name: str) -> Path:
    """The file of a dead_letters() entry; raises FileNotFoundError for any other name."""
    if kind not in ("dead", "quarantine") or "/" in name or name.startswith("."):
        raise FileNotFoundError(name)
    path = spool.spool_paths()[kind] / name
    if not path.is_file():
        raise FileNotFoundError(name)
    return path


def quarantine_requeue(*, name: str) -> Path:
    """Put a quarantined spool file back among the closed ones, for the next run to load (once
    whatever made it fail is fixed); raises FileNotFoundError for any other name."""
    path = dead_letter_path(kind="quarantine", name=name)
    target = spool.spool_paths()["closed"] / name
    os.replace(path, target)
    target.with_name(name + ".attempts").unlink(missing_ok=True)
    return target


@contextmanager
def consolidation_lock():
    """Held by one consolidation of this node's spool at a time (an flock on SPOOL_DIR).

    Nodes consolidating their own spools at once is safe: profiles_rebuild locks each visitor.
    """
    lock_path = Path(settings.SPOOL_DIR) / ".consolidate.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _attempt_count(path: Path) -> None:
    marker = path.with_name(path.name + ".attempts")
    attempts = int(marker.read_text() or 0) + 1 if marker.exists() else 1
    if attempts < MAX_FILE_ATTEMPTS:
        marker.write_text(str(attempts))
        return
    quarantine = spool.spool_paths()["quarantine"]
    quarantine.mkdir(parents=True, exist_ok=True)
    os.replace(path, quarantine / path.name)
    marker.unlink(missing_ok=True)
    logger.error("spool file %s failed %d times; moved to quarantine/", path.name, attempts)


# A file is loaded in slices of this many lines, one transaction each, so memory stays bounded
# (about 2 KB a line: the line, its parsed record, its CSV row) whatever the file's size.
SLICE_LINES = 20_000


def spool_file_load(*, path: Path) -> FileResult:
    """Archive one closed file, load it slice by slice, recompute its visitors' profiles,
    remove it.

    A crash anywhere leaves the file in closed/; the next run loads it again (the unique event
    ids make an already loaded slice add nothing) and recomputes the same profiles.
    """
    paths = spool.spool_paths()
    result = FileResult()
    # Compressing the archive (zlib lets go of the GIL) overlaps the loading.
    with ThreadPoolExecutor(max_workers=1) as archiver:
        archived = archiver.submit(_archive, path, paths["archive"])
        _file_load(path, paths, result)
        archived.result()
    if not result.bad_lines:
        (paths["dead"] / f"{path.name}.dead").unlink()
    path.unlink()
    path.with_name(path.name + ".attempts").unlink(missing_ok=True)
    return result


@dataclass
class _Slice:
    """Up to SLICE_LINES lines of a file, parsed: the records to load (with their COPY text on
    PostgreSQL) and the refused lines (line number, reason, line)."""

    lines: int = 0
    records: list[dict] = field(default_factory=list)
    copy_text: str | None = None
    dead: list[tuple[int, str, bytes]] = field(default_factory=list)
    # The visitors of its records, and the (lower-cased) emails they gave, per client.
    visitors: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    emails: dict[int, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    # Opens and clicks of email messages: loaded as email activity, not as events.
    email_records: list[dict] = field(default_factory=list)
    # Page views that landed from an email link, per client: visitor -> (address, when).
    landings: dict[int, dict[str, tuple[str, datetime]]] = field(
        default_factory=lambda: defaultdict(dict)
    )


LANDING_MARK = f"{LANDING_PARAMETER}="


def _slice_parse(file, first_number: int, known_clients: set[int], *, for_copy: bool) -> _Slice:
    """Read and parse the next slice of an open file. No database: runs in a thread of its own
    while the previous slice loads."""
    piece = _Slice()
    for number, line in enumerate(islice(file, SLICE_LINES), start=first_number):
        piece.lines += 1
        try:
            record = record_parse(line)
        except RecordError as error:
            piece.dead.append((number, str(error), line))
            continue
        if record["client"] in known_clients:
            if record["type"] in EMAIL_TYPES:
                piece.email_records.append(record)
                continue
            piece.records.append(record)
            piece.visitors[record["client"]].add(record["visitor_id"])
            if record["email"]:
                piece.emails[record["client"]][record["visitor_id"]] = record["email"].lower()
            if LANDING_MARK in record["url"] and record["type"] == "page_view":
                landing = (record["url"], record["occurred_at"])
                piece.landings[record["client"]][record["visitor_id"]] = landing
        else:
            piece.dead.append((number, f"unknown client {record['client']}", line))
    if for_copy:
        piece.copy_text = events_copy_text(piece.records)
    return piece


def _file_load(path: Path, paths: dict[str, Path], result: FileResult) -> None:
    # Bounded by the file's distinct visitors (about 100 bytes each), not by its lines.
    touched: dict[int, set[str]] = defaultdict(set)
    emails: dict[int, dict[str, str]] = defaultdict(dict)
    landings: dict[int, dict[str, tuple[str, datetime]]] = defaultdict(dict)
    # Every client a closed file can name existed when it was written; one deleted since has
    # its lines refused (or, deleted during the load, fails the slice and the file is retried).
    known_clients = set(Client.objects.values_list("pk", flat=True))
    for_copy = connection.vendor == "postgresql"
    paths["dead"].mkdir(parents=True, exist_ok=True)
    dead_path = paths["dead"] / f"{path.name}.dead"
    # Rewritten whole: a file loaded again after a crash yields the same dead lines, not twice.
    # Parsing the next slice (Python, holding the GIL) overlaps loading this one (PostgreSQL,
    # the GIL let go): two slices in memory at most.
    with (
        path.open("rb") as file,
        dead_path.open("wb") as dead_file,
        ThreadPoolExecutor(max_workers=1) as parser,
    ):
        upcoming = parser.submit(_slice_parse, file, 1, known_clients, for_copy=for_copy)
        while (piece := upcoming.result()).lines:
            first_number = result.lines + piece.lines + 1
            upcoming = parser.submit(
                _slice_parse, file, first_number, known_clients, for_copy=for_copy
            )
            for number, reason, line in piece.dead:
                _dead_write(dead_file, number, reason, line)
            result.lines += piece.lines
            result.bad_lines += len(piece.dead)
            _slice_load(piece, result, touched, emails)
            for client_id, views in piece.landings.items():
                landings[client_id].update(views)
    # A visitor who landed from an email link joins its recipient, as if they gave the address.
    for client_id, addresses in recipients_of_landings(landings=landings).items():
        emails[client_id] = {**addresses, **emails[client_id]}
    # Profiles once per file, after its events: a visitor in many slices is computed once.
    # Ascending clients: with _visitors_lock's ascending buckets, one global lock order.
    for client_id, visitor_ids in sorted(touched.items()):
        if emails[client_id]:
            with transaction.atomic():
                joined = identities_stitch(client_id=client_id, emails=emails[client_id])
                # In the same transaction: joined visitors are never left without a profile.
                result.profiles += profiles_rebuild(client_id=client_id, visitor_ids=joined)
        ordered = sorted(visitor_ids)
        for start in range(0, len(ordered), PROFILES_PER_TRANSACTION):
            with transaction.atomic():
                result.profiles += profiles_rebuild(
                    client_id=client_id,
                    visitor_ids=set(ordered[start : start + PROFILES_PER_TRANSACTION]),
                )
    # Their profiles changed (or a crashed run left them to change now): rebuild their tables.
    result.client_ids = {client_id for client_id, visitor_ids in touched.items() if visitor_ids}


def _slice_load(
    piece: _Slice,
    result: FileResult,
    touched: dict[int, set[str]],
    emails: dict[int, dict[str, str]],
) -> None:
    with transaction.atomic():
        loaded = events_load(records=piece.records, copy_text=piece.copy_text)
        loaded += email_activities_load(records=piece.email_records)
    for client_id, visitor_ids in piece.visitors.items():
        touched[client_id] |= visitor_ids
    for client_id, given in piece.emails.items():
        emails[client_id].update(given)
    result.loaded += loaded
    result.duplicates += len(piece.records) + len(piece.email_records) - loaded


def _dead_write(file, number: int, reason: str, line: bytes) -> None:
    file.write(f"line {number}: {reason}\t".encode() + line.rstrip(b"\n") + b"\n")


def _archive(path: Path, archive_dir: Path) -> None:
    archive_dir.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=archive_dir, prefix=f".{path.name}.")
    try:
        with (
            path.open("rb") as source,
            gzip.open(os.fdopen(handle, "wb"), "wb", compresslevel=ARCHIVE_GZIP_LEVEL) as sink,
        ):
            shutil.copyfileobj(source, sink)
        os.replace(temporary, archive_dir / f"{path.name}.gz")
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def events_load(*, records: list[dict], copy_text: str | None = None) -> int:
    """Insert records, skipping event ids already present; returns how many were new.

    On PostgreSQL `copy_text` may bring the records already written for COPY
    (events_copy_text), so that the caller can prepare it in another thread.
    """
    if not records:
        return 0
    if connection.vendor == "postgresql":
        return _events_copy(copy_text if copy_text is not None else events_copy_text(records))
    keys = {(record["client"], record["event_id"]) for record in records}
    present = set()
    ids = sorted({event_id for _, event_id in keys})
    for start in range(0, len(ids), 500):
        present |= {
            (client_id, str(event_id))
            for client_id, event_id in Event.objects.filter(
                event_id__in=ids[start : start + 500]
            ).values_list("client_id", "event_id")
        }
    new: dict[tuple, dict] = {}
    for record in records:  # one event id twice in a slice: the first one is kept
        key = (record["client"], record["event_id"])
        if key not in present:
            new.setdefault(key, record)
    Event.objects.bulk_create(
        [
            Event(client_id=record["client"], **{k: v for k, v in record.items() if k != "client"})
            for record in new.values()
        ],
        batch_size=500,
        ignore_conflicts=True,
    )
    return len(new)


def events_copy_text(records: list[dict]) -> str:
    """The records as CSV for COPY into a table of EVENT_COLUMNS."""
    buffer = io.StringIO()
    # csv writes None as an empty field, which COPY reads as NULL (FORCE_NOT_NULL for text).
    csv.writer(buffer).writerows(
        (*_record_columns(record), _json(record["properties"])) for record in records
    )
    return buffer.getvalue()


def _events_copy(copy_text: str) -> int:
    columns = ", ".join(EVENT_COLUMNS)
    copy_options = f"(FORMAT csv, FORCE_NOT_NULL ({', '.join(TEXT_COLUMNS)}))"
    with connection.cursor() as cursor:
        # Almost always every event is new: COPY straight into the table. When one is not (a
        # file loaded again after a crash, an event sent twice), the unique index refuses the
        # COPY whole and the slice goes through a staging table that skips the known ids.
        try:
            with transaction.atomic():
                _copy(
                    cursor,
                    f"COPY aggregation_event ({columns}) FROM STDIN {copy_options}",
                    copy_text,
                )
            return cursor.rowcount
        except IntegrityError:
            pass
        cursor.execute(
            f"CREATE TEMP TABLE event_stage ON COMMIT DROP AS "
            f"SELECT {columns} FROM aggregation_event WITH NO DATA"
        )
        _copy(cursor, f"COPY event_stage ({columns}) FROM STDIN {copy_options}", copy_text)
        # A file can hold one event id twice (a retried batch inside one file): keep the first
        # received, as the SQLite path keeps the first in the file.
        cursor.execute(
            f"INSERT INTO aggregation_event ({columns}) "
            f"SELECT DISTINCT ON (client_id, event_id) {columns} FROM event_stage "
            f"ORDER BY client_id, event_id, received_at "
            f"ON CONFLICT (client_id, event_id) DO NOTHING"
        )
        loaded = cursor.rowcount
        cursor.execute("DROP TABLE event_stage")
    return loaded


def _copy(cursor, statement: str, copy_text: str) -> None:
    # In one read: each read needs the GIL, which the parsing thread holds for up to 5 ms at a
    # time (8 KB reads made the COPY of 1M events take 14 s instead of 3).
    # copy_expert is psycopg2's own: wrapped, its errors are Django's (IntegrityError above,
    # OperationalError for quarantine's "no fault of the file").
    with connection.wrap_database_errors:
        cursor.copy_expert(statement, io.StringIO(copy_text), size=len(copy_text) + 1)


# A record's columns in EVENT_COLUMNS order, but for the last (properties, JSON-encoded).
_record_columns = itemgetter(
    *("client" if name == "client_id" else name for name in EVENT_COLUMNS[:-1])
)


def _json(value: object) -> str:
    return orjson.dumps(value).decode()
