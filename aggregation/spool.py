"""The spool: append-only JSON-lines files that delivery and collect write to (A2).

Layout under SPOOL_DIR:
    open/      files being appended to, one per writing process
    closed/    rotated files waiting for consolidation
    archive/   consolidated files, gzip-compressed
    dead/      lines that could not be loaded, with the reason
    quarantine/ files whose loading failed MAX_FILE_ATTEMPTS runs in a row, kept for a person

Each writing process owns its open file: it holds an exclusive flock on it from the moment
it opens it until it seals it (renames it into closed/) itself, so an append is one write(2)
on an O_APPEND descriptor with no lock or stat around it (the delivery path's every answer
makes one). A file whose lock can be taken has no live writer (its process ended): any
process may seal it. To have live writers seal theirs, spool_seal_open bumps a counter in
SPOOL_DIR/seal-requests; each writer's watcher thread reads it every WATCH_SECONDS and seals
the writer's file when it moved, and spool_seal_open waits for the files it found live (at
most SEAL_WAIT_SECONDS; a file opened since is the next run's). No line is ever written after
its file was sealed. A fork waits for every writer's lock, so a child never inherits a file
halfway opened or sealed. A write reaches the page cache before the request is answered: a
process crash loses nothing; a machine crash can lose what the kernel had not yet flushed
(seconds).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterable
from pathlib import Path

import orjson
from django.conf import settings

logger = logging.getLogger(__name__)


def _line(record: dict) -> bytes:
    try:
        return orjson.dumps(record) + b"\n"
    except TypeError:
        # orjson refuses lone surrogates; json writes them as escapes the loader then rejects
        # with a reason, so the line reaches the dead letters instead of vanishing.
        return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def spool_paths(root: Path | None = None) -> dict[str, Path]:
    root = Path(root or settings.SPOOL_DIR)
    return {name: root / name for name in ("open", "closed", "archive", "dead", "quarantine")}


# A writer that is not appending notices a seal request within this.
WATCH_SECONDS = 0.05
# How long spool_seal_open waits for live writers to seal their files.
SEAL_WAIT_SECONDS = 5.0
REQUESTS_FILE = "seal-requests"


class _SealRequests:
    """A counter in SPOOL_DIR/seal-requests that sealers bump and writers' watchers read
    (pread: a truncated or replaced file reads as a change, never as a fault)."""

    def __init__(self, root: Path, *, is_sealer: bool = False):
        root.mkdir(parents=True, exist_ok=True)
        self._path = root / REQUESTS_FILE
        self._is_sealer = is_sealer
        self._fd = self._open()

    def _open(self) -> int:
        # Group-writable: the web and the worker may run as different users of one group.
        flags = os.O_RDWR if self._is_sealer else os.O_RDONLY
        return os.open(self._path, flags | os.O_CREAT, 0o660)

    def read(self) -> int:
        try:
            if os.stat(self._path).st_ino != os.fstat(self._fd).st_ino:
                # Deleted or replaced: follow the file sealers now bump.
                os.close(self._fd)
                self._fd = self._open()
        except FileNotFoundError:
            os.close(self._fd)
            self._fd = self._open()
        data = os.pread(self._fd, 8, 0)
        return int.from_bytes(data, "little") if len(data) == 8 else -1

    def bump(self) -> None:
        # Sealers in several processes: the increment itself is serialised by a lock.
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            value = max(self.read(), 0)
            os.pwrite(self._fd, ((value + 1) % (1 << 63)).to_bytes(8, "little"), 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


_writers: weakref.WeakSet[SpoolWriter] = weakref.WeakSet()


class SpoolWriter:
    def __init__(self, root: Path, rotate_bytes: int, rotate_seconds: int):
        self._root = Path(root)
        self._paths = spool_paths(root)
        for path in self._paths.values():
            path.mkdir(parents=True, exist_ok=True)
        self._rotate_bytes = rotate_bytes
        self._rotate_seconds = rotate_seconds
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self._size = 0
        self._requests: _SealRequests | None = _SealRequests(self._root)
        self._seen = self._requests.read()
        self._stopped = threading.Event()
        _writers.add(self)
        threading.Thread(target=self._watch, name="spool-writer", daemon=True).start()

    def append(self, records: Iterable[dict]) -> None:
        """Write the records as one append; raises OSError when the disk refuses."""
        data = b"".join(_line(record) for record in records)
        if not data:
            return
        with self._lock:
            if self._fd is None or self._is_due():
                self._rotate()
            assert self._fd is not None
            written = os.write(self._fd, data)
            if written != len(data):
                # Take the half line back, so the next append starts on a line of its own.
                os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
                raise OSError(f"short write to spool: {written} of {len(data)} bytes")
            self._size += written

    def seal(self) -> None:
        """Seal the open file now (the next append opens a new one)."""
        with self._lock:
            self._rotate(reopen=False)

    def close(self) -> None:
        self._stopped.set()
        with self._lock:
            self._rotate(reopen=False)
            if self._requests is not None:
                self._requests.close()
                self._requests = None
        _writers.discard(self)

    def _counter(self) -> _SealRequests:
        # A closed writer that is written to again opens the counter again.
        if self._requests is None:
            self._requests = _SealRequests(self._root)
        return self._requests

    def _watch(self) -> None:
        # Within WATCH_SECONDS of a request (or of its age running out) the file is sealed,
        # whether the writer is busy or idle; appends never look at the counter.
        while not self._stopped.wait(WATCH_SECONDS):
            try:
                with self._lock:
                    if self._stopped.is_set():
                        return
                    asked = self._counter().read() != self._seen
                    if self._fd is not None and (asked or self._is_due()):
                        self._rotate(reopen=False)
                    elif asked:
                        self._seen = self._counter().read()
            except Exception:
                # The watcher must outlive any one failure, or this writer stops answering.
                logger.exception("spool writer watcher")

    def _is_due(self) -> bool:
        age = time.monotonic() - self._opened_at
        return self._size >= self._rotate_bytes or age >= self._rotate_seconds

    def _open(self) -> None:
        while True:
            name = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}.jsonl"
            path = self._paths["open"] / name
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o640)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Between the open and the lock a sealer may have taken the file as ownerless
            # (it was empty: deleted); then this descriptor is nowhere in open/.
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self._fd, self._path = fd, path
        self._opened_at = time.monotonic()
        self._size = 0

    def _rotate(self, reopen: bool = True) -> None:
        fd, path = self._fd, self._path
        if fd is not None and path is not None:
            self._fd = self._path = None
            try:
                _seal_owned(fd, path, self._paths["closed"])
            finally:
                os.close(fd)  # releases the lock
        # Requests made from here on ask for the next file to be sealed too.
        self._seen = self._counter().read()
        if reopen:
            self._open()

    def _forget_in_child(self) -> None:
        # A forked child holds a copy of the parent's descriptor. Closing it drops that copy
        # only; unlocking would release the parent's lock on a file the parent still writes.
        if self._fd is not None:
            os.close(self._fd)
        self._fd = self._path = None
        self._stopped.set()
        if self._requests is not None:
            self._requests.close()
            self._requests = None


def _before_fork() -> None:
    # No fork in the middle of opening or sealing a file: the child would hold a descriptor
    # (and so the lock) of a file it knows nothing of.
    for writer in list(_writers):
        writer._lock.acquire()


def _after_fork_in_parent() -> None:
    for writer in list(_writers):
        writer._lock.release()


def _after_fork_in_child() -> None:
    for writer in list(_writers):
        writer._lock.release()
        writer._forget_in_child()
    _writers.clear()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)


def _seal_owned(fd: int, path: Path, closed_dir: Path) -> Path | None:
    """Move a file whose lock `fd` holds into closed/ (an empty one is deleted)."""
    try:
        if os.fstat(fd).st_size == 0:
            path.unlink()
            return None
        target = closed_dir / path.name
        os.rename(path, target)
        return target
    except FileNotFoundError:
        return None


def file_seal(path: Path, closed_dir: Path) -> tuple[bool, Path | None]:
    """Seal an open file that no live writer owns: (True, its path in closed/ or None when it
    was empty or gone); (False, None) when a live writer holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True, None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False, None
        try:
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                return True, None
        except FileNotFoundError:
            return True, None
        return True, _seal_owned(fd, path, closed_dir)
    finally:
        os.close(fd)


_writer: SpoolWriter | None = None
_writer_pid = 0


def spool_append(records: Iterable[dict]) -> None:
    """Append records to this process's spool file (raises OSError when it cannot store)."""
    global _writer, _writer_pid
    # A forked worker must not share its parent's descriptor: the files would interleave.
    if _writer is None or _writer_pid != os.getpid():
        _writer = SpoolWriter(
            settings.SPOOL_DIR, settings.SPOOL_ROTATE_BYTES, settings.SPOOL_ROTATE_SECONDS
        )
        _writer_pid = os.getpid()
    _writer.append(records)


def spool_writer_reset() -> None:
    global _writer
    if _writer is not None and _writer_pid == os.getpid():
        _writer.close()
    _writer = None


def spool_seal_open(root: Path | None = None) -> list[Path]:
    """Seal every open file (all writers), so consolidation can take what was written so far:
    this process's writers at once, other live writers when asked (waiting for them at most
    SEAL_WAIT_SECONDS), and the files of writers that ended."""
    paths = spool_paths(root)
    paths["closed"].mkdir(parents=True, exist_ok=True)
    before = set(spool_closed_files(root))
    for writer in list(_writers):
        if writer._root == paths["open"].parent:
            writer.seal()
    live = [
        path
        for path in sorted(paths["open"].glob("*.jsonl"))
        if not file_seal(path, paths["closed"])[0]
    ]
    if live:
        # Ask live writers to seal theirs, and wait for those files only: a writer that keeps
        # appending opens a new file at once, and that one is the next run's.
        requests = _SealRequests(paths["open"].parent, is_sealer=True)
        try:
            requests.bump()
        finally:
            requests.close()
        deadline = time.monotonic() + SEAL_WAIT_SECONDS
        while live and time.monotonic() < deadline:
            time.sleep(WATCH_SECONDS / 2)
            # A writer that ended meanwhile leaves its file ownerless: seal it here.
            live = [
                path for path in live if path.exists() and not file_seal(path, paths["closed"])[0]
            ]
        if live:
            logger.warning("%d spool files still open after %s s", len(live), SEAL_WAIT_SECONDS)
    return sorted(set(spool_closed_files(root)) - before)


def spool_closed_files(root: Path | None = None) -> list[Path]:
    return sorted(spool_paths(root)["closed"].glob("*.jsonl"))
