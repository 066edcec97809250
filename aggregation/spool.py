"""The spool: append-only JSON-lines files that delivery and collect write to (A2).

Layout under SPOOL_DIR:
    open/      files being appended to, one per writing process
    closed/    rotated files waiting for consolidation
    archive/   consolidated files, gzip-compressed
    dead/      lines that could not be loaded, with the reason
    quarantine/ files whose loading failed MAX_FILE_ATTEMPTS runs in a row, kept for a person

Each append is one write(2) on an O_APPEND descriptor under an exclusive flock. Consolidation
seals an open file by taking the same lock and renaming it into closed/; a writer that then
finds its path gone opens a new file, so no line is written after a file was taken. A write
reaches the page cache before the request is answered: a process crash loses nothing; a
machine crash can lose what the kernel had not yet flushed (seconds).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import orjson
from django.conf import settings


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


class SpoolWriter:
    def __init__(self, root: Path, rotate_bytes: int, rotate_seconds: int):
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

    def append(self, records: Iterable[dict]) -> None:
        """Write the records as one append; raises OSError when the disk refuses."""
        data = b"".join(_line(record) for record in records)
        if not data:
            return
        with self._lock:
            if self._fd is None or self._is_due():
                self._rotate()
            assert self._fd is not None
            # A sealer may take (or delete, when still empty) even the file just opened, so
            # check again after every reopen until we hold the lock on a file still in open/.
            while True:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
                if self._is_still_open():
                    break
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                self._open()
            try:
                written = os.write(self._fd, data)
                if written != len(data):
                    # Take the half line back, so the next append starts on a line of its own.
                    os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
                    raise OSError(f"short write to spool: {written} of {len(data)} bytes")
                self._size += written
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                self._rotate(reopen=False)

    def _is_due(self) -> bool:
        age = time.monotonic() - self._opened_at
        return self._size >= self._rotate_bytes or age >= self._rotate_seconds

    def _is_still_open(self) -> bool:
        assert self._fd is not None and self._path is not None
        try:
            return os.stat(self._path).st_ino == os.fstat(self._fd).st_ino
        except FileNotFoundError:
            return False

    def _open(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        name = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}.jsonl"
        self._path = self._paths["open"] / name
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._opened_at = time.monotonic()
        self._size = 0

    def _rotate(self, reopen: bool = True) -> None:
        if self._fd is not None and self._path is not None:
            file_seal(self._path, self._paths["closed"])
        if reopen:
            self._open()
        elif self._fd is not None:
            os.close(self._fd)
            self._fd = None


def file_seal(path: Path, closed_dir: Path) -> Path | None:
    """Move an open spool file into closed/ under its writer's lock; None if already gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        target = closed_dir / path.name
        try:
            if os.fstat(fd).st_size == 0:
                path.unlink()
                return None
            os.rename(path, target)
        except FileNotFoundError:
            return None
        return target
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
    """Seal every open file (all writers), so consolidation can take what was written so far."""
    paths = spool_paths(root)
    paths["closed"].mkdir(parents=True, exist_ok=True)
    sealed = []
    for path in sorted(paths["open"].glob("*.jsonl")):
        target = file_seal(path, paths["closed"])
        if target is not None:
            sealed.append(target)
    return sealed


def spool_closed_files(root: Path | None = None) -> list[Path]:
    return sorted(spool_paths(root)["closed"].glob("*.jsonl"))
