"""Where published lookup tables live, and each node's local copy of them (D2).

Two kinds of blob are published per client:
- a manifest (small, rewritten on every publish) naming, per placement, the active campaign,
  its default answer and the table version now serving;
- one table per (campaign, version), immutable once written: visitor id -> content id, with
  the answers for every content it names.

Publishing writes the table first and then replaces the manifest in one atomic write, so a
reader sees the old version or the new one, never a mix. Stores: Redis (REDIS_URL) or a
directory (the embedded default). A node keeps parsed copies in process memory and checks the
manifest at most every DELIVERY_REFRESH_SECONDS, so a request costs no database query and, in
between checks, no network round trip.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings

logger = logging.getLogger(__name__)


class TableStore(Protocol):
    def manifest_get(self, public_key: str) -> bytes | None: ...
    def manifest_put(self, public_key: str, data: bytes) -> None: ...
    def table_get(self, campaign_id: int, version: int) -> bytes | None: ...
    def table_put(self, campaign_id: int, version: int, data: bytes) -> None: ...
    def table_delete(self, campaign_id: int, version: int) -> None: ...
    def tag_get(self, public_key: str, version: str) -> bytes | None: ...
    def tag_put(self, public_key: str, version: str, data: bytes) -> None: ...


# A tag version once served stays available this long, so that pinned snippets keep working
# after a deploy or a change of the client's tag settings until the client pastes the new one.
TAG_VERSION_DAYS = 30


class RedisTableStore:
    def __init__(self, url: str, prefix: str = "cm"):
        import redis

        # Bounded timeouts: a delivery node must keep answering from memory if Redis stalls.
        self._redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._prefix = prefix

    def _manifest_key(self, public_key: str) -> str:
        return f"{self._prefix}:manifest:{public_key}"

    def _table_key(self, campaign_id: int, version: int) -> str:
        return f"{self._prefix}:table:{campaign_id}:{version}"

    def manifest_get(self, public_key: str) -> bytes | None:
        return self._redis.get(self._manifest_key(public_key))  # type: ignore[return-value]

    def manifest_put(self, public_key: str, data: bytes) -> None:
        self._redis.set(self._manifest_key(public_key), data)

    def table_get(self, campaign_id: int, version: int) -> bytes | None:
        return self._redis.get(self._table_key(campaign_id, version))  # type: ignore[return-value]

    def table_put(self, campaign_id: int, version: int, data: bytes) -> None:
        self._redis.set(self._table_key(campaign_id, version), data)

    def table_delete(self, campaign_id: int, version: int) -> None:
        self._redis.delete(self._table_key(campaign_id, version))

    def tag_get(self, public_key: str, version: str) -> bytes | None:
        return self._redis.get(f"{self._prefix}:tag:{public_key}:{version}")  # type: ignore[return-value]

    def tag_put(self, public_key: str, version: str, data: bytes) -> None:
        key = f"{self._prefix}:tag:{public_key}:{version}"
        self._redis.set(key, data, ex=TAG_VERSION_DAYS * 86400)


class FileTableStore:
    def __init__(self, directory: Path):
        self._directory = Path(directory)

    def _manifest_path(self, public_key: str) -> Path:
        return self._directory / "manifests" / f"{public_key}.json"

    def _table_path(self, campaign_id: int, version: int) -> Path:
        return self._directory / "tables" / f"{campaign_id}-{version}.json"

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write aside, then rename over: readers see the whole old file or the whole new one.
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def manifest_get(self, public_key: str) -> bytes | None:
        return self._read(self._manifest_path(public_key))

    def manifest_put(self, public_key: str, data: bytes) -> None:
        self._write(self._manifest_path(public_key), data)

    def table_get(self, campaign_id: int, version: int) -> bytes | None:
        return self._read(self._table_path(campaign_id, version))

    def table_put(self, campaign_id: int, version: int, data: bytes) -> None:
        self._write(self._table_path(campaign_id, version), data)

    def table_delete(self, campaign_id: int, version: int) -> None:
        self._table_path(campaign_id, version).unlink(missing_ok=True)

    def _tag_path(self, public_key: str, version: str) -> Path:
        return self._directory / "tags" / f"{public_key}.{version}.js"

    def tag_get(self, public_key: str, version: str) -> bytes | None:
        path = self._tag_path(public_key, version)
        try:
            if time.time() - path.stat().st_mtime > TAG_VERSION_DAYS * 86400:
                return None
        except FileNotFoundError:
            return None
        return self._read(path)

    def tag_put(self, public_key: str, version: str, data: bytes) -> None:
        self._write(self._tag_path(public_key, version), data)


@cache
def store_get() -> TableStore:
    """The configured table store: Redis when REDIS_URL is set, else files under TABLE_STORE_DIR."""
    if settings.REDIS_URL:
        return RedisTableStore(settings.REDIS_URL)
    return FileTableStore(settings.TABLE_STORE_DIR)


@dataclass(frozen=True)
class Table:
    campaign_id: int
    version: int
    contents: dict[int, dict[str, Any]]
    visitors: dict[str, int]


@dataclass(frozen=True)
class PlacementView:
    key: str
    campaign_id: int
    campaign_key: str
    default: dict[str, Any] | None
    table: Table | None


@dataclass(frozen=True)
class ClientView:
    client_id: int
    public_key: str
    origins: frozenset[str]
    placements: dict[str, PlacementView]
    tag: dict[str, Any]


@dataclass
class _Entry:
    raw: bytes | None
    view: ClientView | None
    checked_at: float
    tables: dict[tuple[int, int], Table] = field(default_factory=dict)
    # False while a table the manifest names could not be read: the next check tries again.
    is_complete: bool = True


class LocalTables:
    """A node's in-memory copy of the published manifests and tables."""

    # Keys that named no client are remembered (bounded) so that a flood of made-up keys costs
    # one store read per key and refresh interval, and no memory beyond this many entries.
    MAX_MISSES = 10_000

    def __init__(self, store: TableStore, refresh_seconds: float):
        self._store = store
        self._refresh_seconds = refresh_seconds
        self._entries: dict[str, _Entry] = {}
        self._misses: dict[str, float] = {}

    def client(self, public_key: str) -> ClientView | None:
        now = time.monotonic()
        entry = self._entries.get(public_key)
        if entry is not None and now - entry.checked_at < self._refresh_seconds:
            return entry.view
        missed_at = self._misses.get(public_key)
        if missed_at is not None and now - missed_at < self._refresh_seconds:
            return None
        # Two threads may refresh one key at once; both compute the same entry, and the dict
        # assignment is atomic, so no lock is held across the store read.
        entry = self._refresh(public_key, entry, now)
        if entry.view is None:
            self._entries.pop(public_key, None)
            if len(self._misses) >= self.MAX_MISSES:
                self._misses.clear()
            self._misses[public_key] = now
        else:
            self._entries[public_key] = entry
            self._misses.pop(public_key, None)
        return entry.view

    def _refresh(self, public_key: str, entry: _Entry | None, now: float) -> _Entry:
        try:
            raw = self._store.manifest_get(public_key)
        except Exception:
            # Keep answering from what we hold; the next check tries the store again.
            logger.warning("table store unreachable; serving the copy held", exc_info=True)
            if entry is not None:
                entry.checked_at = now
                return entry
            return _Entry(raw=None, view=None, checked_at=now)
        if entry is not None and raw == entry.raw and entry.is_complete:
            entry.checked_at = now
            return entry
        if raw is None:
            return _Entry(raw=None, view=None, checked_at=now)
        held = entry.tables if entry is not None else {}
        try:
            view, tables, is_complete = self._load(json.loads(raw), held)
        except Exception:
            logger.exception("could not load the published tables of %s", public_key)
            if entry is not None:
                entry.checked_at = now
                return entry
            return _Entry(raw=None, view=None, checked_at=now)
        return _Entry(raw=raw, view=view, checked_at=now, tables=tables, is_complete=is_complete)

    def _load(
        self, manifest: dict, held: dict[tuple[int, int], Table]
    ) -> tuple[ClientView, dict[tuple[int, int], Table], bool]:
        tables: dict[tuple[int, int], Table] = {}
        placements = {}
        is_complete = True
        for key, placement in manifest["placements"].items():
            table = None
            if placement["version"] is not None:
                ident = (placement["campaign_id"], placement["version"])
                table = held.get(ident) or self._table_load(*ident)
                if table is None:
                    # Keep serving the campaign's older version held, if any; else its default.
                    is_complete = False
                    table = max(
                        (t for t in held.values() if t.campaign_id == ident[0]),
                        key=lambda t: t.version,
                        default=None,
                    )
                if table is not None:
                    tables[(table.campaign_id, table.version)] = table
            placements[key] = PlacementView(
                key=key,
                campaign_id=placement["campaign_id"],
                campaign_key=placement["campaign"],
                default=placement["default"],
                table=table,
            )
        view = ClientView(
            client_id=manifest["client_id"],
            public_key=manifest["public_key"],
            origins=frozenset(manifest["origins"]),
            placements=placements,
            tag=manifest["tag"],
        )
        return view, tables, is_complete

    def _table_load(self, campaign_id: int, version: int) -> Table | None:
        raw = self._store.table_get(campaign_id, version)
        if raw is None:
            # Only this campaign falls back to its default; the client's others still serve.
            logger.error("table %s v%s is named but missing", campaign_id, version)
            return None
        data = json.loads(raw)
        return Table(
            campaign_id=campaign_id,
            version=version,
            contents={int(ident): answer for ident, answer in data["contents"].items()},
            visitors=data["visitors"],
        )


_local: LocalTables | None = None


def local_tables() -> LocalTables:
    """This process's copy of the published tables."""
    global _local
    if _local is None:
        _local = LocalTables(store_get(), settings.DELIVERY_REFRESH_SECONDS)
    return _local


def local_tables_reset() -> None:
    global _local
    _local = None
    store_get.cache_clear()
