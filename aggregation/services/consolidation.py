"""Ingest and consolidation (A1-A3): collect batches, the spool, loading into the database."""

from __future__ import annotations

import ctypes
import fcntl
import io
import logging
import os
import signal
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import islice
from operator import attrgetter
from pathlib import Path

import billiard
import orjson
import zstandard
from django.conf import settings
from django.db import (
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    connections,
    transaction,
)
from django.utils import timezone

from aggregation import spool
from aggregation.models import ConsolidationRun, Event
from aggregation.profiles import ProfileTally
from aggregation.records import (
    EMAIL_TYPES,
    RecordError,
    SpoolLine,
    record_parse,
    spool_line_decode,
    spool_line_of,
)
from aggregation.services.identities import identities_stitch
from aggregation.services.imports import import_reports_prune
from aggregation.services.profiles import (
    gc_paused,
    profiles_apply,
    profiles_made_early,
    profiles_settle,
)
from campaigns.mailtracking import LANDING_PARAMETER
from campaigns.services.email_tracking import email_activities_load, recipients_of_landings
from coremetrics.bulk import copy_line
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


# Archives are Zstandard at level 1: on 47 MB of spool lines like the benchmark's, 0.04 s of
# CPU and 13.0% of the size, where gzip at level 1 took 0.20 s for 17.5% (gzip's CPU was a
# fifth of a consolidation's Python time). Read one with `zstd -dc FILE` or python-zstandard.
ARCHIVE_ZSTD_LEVEL = 1

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
    paths = spool.spool_closed_files()
    with gc_paused():
        for path, outcome in _files_load(paths):
            if isinstance(outcome, FileFailure):
                errors.append(f"{path.name}: {outcome.error}")
                # A database that is away or busy is no fault of the file: only other errors
                # count towards quarantine.
                if not outcome.no_fault:
                    _attempt_count(path)
                continue
            _file_done(path, outcome)
            run.files += 1
            run.lines += outcome.lines
            run.loaded += outcome.loaded
            run.duplicates += outcome.duplicates
            run.bad_lines += outcome.bad_lines
            run.profiles_updated += outcome.profiles
            client_ids |= outcome.client_ids
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


def _files_load(paths: list[Path]) -> Iterator[tuple[Path, FileResult | FileFailure]]:
    """Load files, CONSOLIDATION_WORKERS at a time on PostgreSQL, each in a process of its own
    with its own connection and transaction (a file's parsing and profiles take a core of
    Python, its COPY and index upkeep about as much of PostgreSQL: threads would share one
    interpreter lock). Yields each file with its result or what failed it."""
    workers = settings.CONSOLIDATION_WORKERS if connection.vendor == "postgresql" else 1
    if workers <= 1 or len(paths) <= 1:
        for path in paths:
            yield path, _file_load_or_failure(path)
        return
    if connection.in_atomic_block:
        raise RuntimeError("loader processes cannot load files inside this process's transaction")
    # The loaders open connections of their own: none may inherit this process's.
    connections.close_all()
    broken = []
    with _loaders(min(workers, len(paths))) as pool:
        loads = [pool.submit(_file_load_in_process, path) for path in paths]
        for path, load in zip(paths, loads, strict=True):
            try:
                yield path, load.result()
            except BrokenProcessPool:
                broken.append(path)
            except Exception as error:
                yield path, FileFailure(error=f"{type(error).__name__}: {error}", no_fault=False)
    # A loader died (out of memory, killed) and took the pool down: each file not loaded yet
    # is loaded again, alone, so that only a file that kills its own loader fails.
    for path in broken:
        with _loaders(1) as pool:
            try:
                yield path, pool.submit(_file_load_in_process, path).result()
            except BrokenProcessPool as error:
                yield path, FileFailure(error=f"its loader died: {error}", no_fault=False)


def _loaders(count: int) -> ProcessPoolExecutor:
    """A pool of loader processes. billiard's, Celery's fork of multiprocessing: a Celery
    prefork worker's pool process is daemonic, and multiprocessing refuses such a process
    children; billiard does not. In concurrent.futures' pool, not billiard's: it stops in
    milliseconds, billiard's in about a second."""
    return ProcessPoolExecutor(
        max_workers=count,
        mp_context=billiard.get_context("fork"),
        initializer=_loader_start,
        initargs=(os.getpid(),),
    )


@dataclass
class FileFailure:
    """Why a file did not load (picklable, unlike some database errors): `no_fault` when the
    database was away or busy, which does not count towards quarantine."""

    error: str
    no_fault: bool


def _file_load_or_failure(path: Path) -> FileResult | FileFailure:
    try:
        return _file_load_kept(path)
    except Exception as error:
        logger.exception("could not load spool file %s", path.name)
        return FileFailure(
            error=f"{type(error).__name__}: {error}",
            no_fault=isinstance(error, OperationalError | InterfaceError),
        )


def _loader_start(parent: int) -> None:
    """A loader process takes signals as a plain process does: not as its parent's handlers
    would (a Celery pool process's SIGTERM raises SystemExit, which the pool's worker loop
    catches and goes on loading). It dies with the process that started it (Linux): killing
    a consolidation kills its loads, whose transactions roll back, and the next run loads the
    files again."""
    for number in _PARENT_HANDLED_SIGNALS:
        signal.signal(number, signal.SIG_DFL)
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


_PARENT_HANDLED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
_PR_SET_PDEATHSIG = 1


def _file_load_in_process(path: Path) -> FileResult | FileFailure:
    try:
        return _file_load_or_failure(path)
    finally:
        connection.close()


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
    for path in [*archive.glob("*.zst"), *archive.glob("*.gz")]:  # .gz: archives before 0.7
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


# A file is read in slices of this many lines (two in memory at a time: one parsed while the
# other loads), so memory stays bounded by the file's visitors whatever its size.
SLICE_LINES = 20_000


def _file_load_kept(path: Path) -> FileResult:
    """Archive one closed file, load it slice by slice and update its visitors' profiles, in
    one transaction; leave the file in closed/ for the consolidation to remove once it has
    the result (_file_done).

    A crash anywhere leaves the file in closed/; the next run loads it again (the unique event
    ids make an already loaded slice add nothing) and recomputes the same profiles. So does a
    loader that dies after its commit, before handing its result over.
    """
    paths = spool.spool_paths()
    result = FileResult()
    # Compressing the archive (zstandard lets go of the GIL) overlaps the loading.
    with ThreadPoolExecutor(max_workers=1) as archiver:
        archived = archiver.submit(_archive, path, paths["archive"])
        _file_load(path, paths, result)
        archived.result()
    return result


def _file_done(path: Path, result: FileResult) -> None:
    """Remove a loaded file, its attempts and, when it had no bad line, its dead letters."""
    if not result.bad_lines:
        (spool.spool_paths()["dead"] / f"{path.name}.dead").unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".attempts").unlink(missing_ok=True)


@dataclass
class _Slice:
    """Up to SLICE_LINES lines of a file, parsed: the records to load (with their COPY text on
    PostgreSQL) and the refused lines (line number, reason, line)."""

    lines: list[bytes] = field(default_factory=list)
    first_number: int = 1
    events: int = 0  # how many of its lines are events to load
    # The events' records where there is no COPY text (SQLite): bulk_create loads them.
    records: list[SpoolLine] = field(default_factory=list)
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
# The profiles a file's events make by themselves: client -> visitor -> tally.
FileTallies = dict[int, dict[str, ProfileTally]]


def _slice_parse(
    lines: list[bytes],
    first_number: int,
    known_clients: set[int],
    tallies: FileTallies,
    *,
    careful: bool,
    for_copy: bool,
) -> _Slice:
    """Parse a slice of lines. No database: runs in a thread of its own while the previous
    slice loads. Adds each event to its visitor's tally (`tallies` is only this thread's to
    write while it runs).

    A line takes the fast path (spool_line_decode) unless `careful`: then every line is read
    by record_parse, whose refusals name the field.
    """
    piece = _Slice(lines=lines, first_number=first_number)
    rows = []
    for number, line in enumerate(lines, start=first_number):
        record = None if careful else spool_line_decode(line)
        copy_row = ""
        if record is not None and for_copy:
            try:
                copy_row = _copy_row(record)
            except TypeError:  # a property orjson cannot write (an integer beyond 64 bits)
                record = None
        if record is None or record.type in EMAIL_TYPES:
            try:
                parsed = record_parse(line)
                record = spool_line_of(parsed)
                if for_copy:
                    copy_row = _copy_row_escaped(record)
            except (RecordError, TypeError) as error:
                piece.dead.append((number, str(error), line))
                continue
        client_id = record.client
        if client_id not in known_clients:
            piece.dead.append((number, f"unknown client {client_id}", line))
            continue
        kind = record.type
        if kind in EMAIL_TYPES:
            piece.email_records.append(parsed)
            continue
        piece.events += 1
        if for_copy:
            rows.append(copy_row)
        else:
            piece.records.append(record)
        visitor_id = record.visitor_id
        by_visitor = tallies[client_id]
        tally = by_visitor.get(visitor_id)
        if tally is None:
            tally = by_visitor[visitor_id] = ProfileTally()
        tally.add(record)
        piece.visitors[client_id].add(visitor_id)
        if record.email:
            piece.emails[client_id][visitor_id] = record.email.lower()
        if kind == "page_view" and LANDING_MARK in record.url:
            piece.landings[client_id][visitor_id] = (
                record.url,
                datetime.fromisoformat(record.occurred_at),
            )
    if for_copy:
        rows.append("")
        piece.copy_text = "\n".join(rows)
    return piece


def _file_load(path: Path, paths: dict[str, Path], result: FileResult) -> None:
    """Load a file in one transaction: its events, then its visitors' profiles.

    Memory is bounded by the file (SPOOL_ROTATE_BYTES): two slices of lines at a time, and a
    tally of each of its visitors.
    """
    tallies: FileTallies = defaultdict(dict)
    # Visitors whose profiles must be read from the database, not only from this file.
    recompute: dict[int, set[str]] = defaultdict(set)
    emails: dict[int, dict[str, str]] = defaultdict(dict)
    landings: dict[int, dict[str, tuple[str, datetime]]] = defaultdict(dict)
    for_copy = connection.vendor == "postgresql"
    # SQLite (the embedded default) has no COPY to check what the fast path leaves unchecked.
    careful = not for_copy
    paths["dead"].mkdir(parents=True, exist_ok=True)
    dead_path = paths["dead"] / f"{path.name}.dead"

    def read_and_parse(file, first_number: int) -> _Slice:
        lines = list(islice(file, SLICE_LINES))
        return _slice_parse(
            lines, first_number, known_clients, tallies, careful=careful, for_copy=for_copy
        )

    # Rewritten whole: a file loaded again after a crash yields the same dead lines, not twice.
    # Parsing the next slice (Python, holding the GIL) overlaps loading this one (PostgreSQL,
    # the GIL let go): two slices in memory at most. One transaction for the file: a crash
    # anywhere leaves nothing of it, and its profiles are written with its events.
    with (
        path.open("rb") as file,
        dead_path.open("wb") as dead_file,
        ThreadPoolExecutor(max_workers=1) as parser,
        transaction.atomic(),
    ):
        # Every client a closed file can name existed when it was written; one deleted since
        # has its lines refused.
        known_clients = set(Client.objects.values_list("pk", flat=True))
        held: set[int] = set()
        upcoming = parser.submit(read_and_parse, file, 1)
        while (piece := upcoming.result()).lines:
            upcoming = parser.submit(read_and_parse, file, piece.first_number + len(piece.lines))
            held |= _clients_hold(piece.visitors.keys() - held)
            try:
                loaded = _slice_load(piece)
            except DataError:
                # PostgreSQL refused a value the fast path let through (a date that does not
                # exist, an id that is not hex): read the slice again the careful way, which
                # names the line. Its visitors' profiles are read from the database: the fast
                # reading added to their tallies what may be refused now.
                logger.warning("a slice of %s needs the careful reading", path.name)
                for client_id, visitor_ids in piece.visitors.items():
                    recompute[client_id] |= visitor_ids
                piece = _slice_parse(
                    piece.lines,
                    piece.first_number,
                    known_clients,
                    defaultdict(dict),
                    careful=True,
                    for_copy=for_copy,
                )
                loaded = _slice_load(piece)
                loaded_all = False
            else:
                loaded_all = loaded == piece.events + len(piece.email_records)
            for number, reason, line in piece.dead:
                _dead_write(dead_file, number, reason, line)
            result.lines += len(piece.lines)
            result.bad_lines += len(piece.dead)
            result.loaded += loaded
            result.duplicates += piece.events + len(piece.email_records) - loaded
            for client_id, visitor_ids in piece.visitors.items():
                if not loaded_all:
                    # Some of its events were known already (a file loaded before, an event
                    # sent twice): the profiles come from the database's events.
                    recompute[client_id] |= visitor_ids
            for client_id, given in piece.emails.items():
                emails[client_id].update(given)
            for client_id, views in piece.landings.items():
                landings[client_id].update(views)
        # A visitor who landed from an email link joins its recipient, as if they gave the
        # address.
        for client_id, addresses in recipients_of_landings(landings=landings).items():
            emails[client_id] = {**addresses, **emails[client_id]}
        # Every client's new profiles are made before the first lock (stitching's, then the
        # visitors'), so that no other loader waits for that work.
        early = {
            client_id: profiles_made_early(
                client_id=client_id, tallies=by_visitor, recompute=recompute[client_id]
            )
            for client_id, by_visitor in tallies.items()
        }
        # Ascending clients: with the visitor locks' ascending buckets, one global lock order.
        for client_id, by_visitor in sorted(tallies.items()):
            if emails[client_id]:
                joined = identities_stitch(client_id=client_id, emails=emails[client_id])
                recompute[client_id] |= joined
            result.profiles += profiles_apply(
                client_id=client_id,
                tallies=by_visitor,
                recompute=recompute[client_id],
                early=early[client_id],
            )
    # Their profiles changed: rebuild their tables.
    result.client_ids = {client_id for client_id, by_visitor in tallies.items() if by_visitor}


class ClientGone(RuntimeError):
    pass


def _clients_hold(client_ids: set[int]) -> set[int]:
    """Hold these clients until the file's transaction ends (FOR KEY SHARE), before their
    events are COPYed: what the events' foreign key constraint did for each event, done once
    per client and file (aggregation.apps.client_loads_wait makes a client's deletion wait for
    the load). A client deleted since the file's start fails the file, whose next run refuses
    that client's lines."""
    if not client_ids or connection.vendor != "postgresql":
        return client_ids
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM coremetrics_client WHERE id = ANY(%s) FOR KEY SHARE",
            [sorted(client_ids)],
        )
        found = {pk for (pk,) in cursor.fetchall()}
    if gone := client_ids - found:
        raise ClientGone(f"client {', '.join(map(str, sorted(gone)))} was deleted during the load")
    return found


def _slice_load(piece: _Slice) -> int:
    with transaction.atomic():
        loaded = events_load(records=piece.records, copy_text=piece.copy_text)
        loaded += email_activities_load(records=piece.email_records)
    return loaded


def _dead_write(file, number: int, reason: str, line: bytes) -> None:
    file.write(f"line {number}: {reason}\t".encode() + line.rstrip(b"\n") + b"\n")


def _archive(path: Path, archive_dir: Path) -> None:
    archive_dir.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=archive_dir, prefix=f".{path.name}.")
    try:
        with path.open("rb") as source, os.fdopen(handle, "wb") as sink:
            zstandard.ZstdCompressor(level=ARCHIVE_ZSTD_LEVEL).copy_stream(source, sink)
        os.replace(temporary, archive_dir / f"{path.name}.zst")
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def events_load(*, records: list[SpoolLine], copy_text: str | None = None) -> int:
    """Insert records, skipping event ids already present; returns how many were new.

    On PostgreSQL `copy_text` may bring the records already written for COPY (copy_row) in
    their place, so that the caller can prepare it in another thread.
    """
    if connection.vendor == "postgresql":
        if copy_text is None:
            copy_text = "".join(_copy_row_escaped(record) + "\n" for record in records)
        return _events_copy(copy_text) if copy_text else 0
    if not records:
        return 0
    keys = {(record.client, record.event_id) for record in records}
    present = set()
    ids = sorted({event_id for _, event_id in keys})
    for start in range(0, len(ids), 500):
        present |= {
            (client_id, str(event_id))
            for client_id, event_id in Event.objects.filter(
                event_id__in=ids[start : start + 500]
            ).values_list("client_id", "event_id")
        }
    new: dict[tuple, SpoolLine] = {}
    for record in records:  # one event id twice in a slice: the first one is kept
        key = (record.client, record.event_id)
        if key not in present:
            new.setdefault(key, record)
    Event.objects.bulk_create(
        [_event_of(record) for record in new.values()], batch_size=500, ignore_conflicts=True
    )
    return len(new)


def _event_of(record: SpoolLine) -> Event:
    return Event(
        client_id=record.client,
        **{name: getattr(record, name) for name in EVENT_COLUMNS if name in TEXT_COLUMNS},
        event_id=record.event_id,
        occurred_at=datetime.fromisoformat(record.occurred_at),
        received_at=datetime.fromisoformat(record.received_at),
        content_id=record.content_id,
        table_version=record.table_version,
        value=None if record.value is None else Decimal(record.value),
        properties=record.properties,
    )


def _copy_row(record: SpoolLine) -> str:
    """The record as a line of COPY's text format, for a record of spool_line_decode's fast
    path (no string in it, nor in its properties, holds a backslash, tab or newline: JSON would
    have escaped them)."""
    r = record
    return (
        f"{r.event_id}\t{r.client}\t{r.type}\t{r.visitor_id}\t{r.session_id}\t"
        f"{r.occurred_at}\t{r.received_at}\t{r.url}\t{r.referrer}\t{r.campaign_key}\t"
        f"{r.placement_key}\t{_NULL if r.content_id is None else r.content_id}\t"
        f"{_NULL if r.table_version is None else r.table_version}\t{r.product_id}\t"
        f"{r.category}\t{r.order_id}\t{_NULL if r.value is None else r.value}\t"
        f"{r.currency}\t{r.email}\t{_json(r.properties) if r.properties else '{}'}"
    )


def _copy_row_escaped(record: SpoolLine) -> str:
    """The record as a line of COPY's text format, any string escaped."""
    return copy_line((*_record_columns(record), _json(record.properties)))


_NULL = "\\N"


def _events_copy(copy_text: str) -> int:
    columns = ", ".join(EVENT_COLUMNS)
    with connection.cursor() as cursor:
        # Almost always every event is new: COPY straight into the table. When one is not (a
        # file loaded again after a crash, an event sent twice), the unique index refuses the
        # COPY whole and the slice goes through a staging table that skips the known ids.
        try:
            with transaction.atomic():
                _copy(cursor, f"COPY aggregation_event ({columns}) FROM STDIN", copy_text)
            return cursor.rowcount
        except IntegrityError:
            pass
        cursor.execute(
            f"CREATE TEMP TABLE event_stage ON COMMIT DROP AS "
            f"SELECT {columns} FROM aggregation_event WITH NO DATA"
        )
        _copy(cursor, f"COPY event_stage ({columns}) FROM STDIN", copy_text)
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
    # DataError for a value PostgreSQL refuses, OperationalError for quarantine's "no fault of
    # the file").
    with connection.wrap_database_errors:
        cursor.copy_expert(statement, io.StringIO(copy_text), size=len(copy_text) + 1)


# A record's columns in EVENT_COLUMNS order, but for the last (properties, JSON-encoded).
_record_columns = attrgetter(
    *("client" if name == "client_id" else name for name in EVENT_COLUMNS[:-1])
)


def _json(value: object) -> str:
    return orjson.dumps(value).decode()
