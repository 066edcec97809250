"""Where published lookup tables live, and each node's local copy of them (D2).

Two kinds of blob are published per client:
- a manifest (small, rewritten on every publish) naming, per placement, the active campaign,
  its default answer and the table version now serving;
- one table per (campaign, version), immutable once written: visitor id -> content id, with
  the answers for every content it names.

Publishing writes the table first and then replaces the manifest in one atomic write, so a
reader sees the old version or the new one, never a mix. Stores: Redis (REDIS_URL) or a
directory (the embedded default).

A node never reads the store on the request path. Each web process keeps every client's view
in memory and a background thread checks one version counter every DELIVERY_REFRESH_SECONDS;
when it moved, the thread reads the manifests again and swaps the views in with one reference
assignment. Tables are kept in DELIVERY_NODE_DIR in a memory-mappable form (sorted visitor ids
and their content ids, searched with numpy), so the node's worker processes share one copy in
the page cache, a 1,000,000-visitor table costs 36 MB once per node, and a restarted process
serves again from the local copy at once, even while Redis is away.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings

from delivery.stores import TableStore, file_create, file_write, store_get
from delivery.tablefile import Table, TableFormatError, table_decode, table_map

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlacementView:
    key: str
    campaign_id: int
    campaign_key: str
    default: dict[str, Any] | None
    table: Table | None
    # Frequency cap: at most this many views of the table's content per visitor and period.
    cap_views: int | None = None
    cap_period: str = "day"


@dataclass(frozen=True)
class ClientView:
    client_id: int
    public_key: str
    origins: frozenset[str]
    placements: dict[str, PlacementView]
    tag: dict[str, Any]
    # The client's time zone, for the hours and weekdays conditions.
    time_zone: str = "UTC"


@dataclass(frozen=True)
class _Held:
    raw: bytes
    view: ClientView
    # False while a table the manifest names could not be read: the next sync tries again.
    is_complete: bool


class LocalTables:
    """A node's copy of the published manifests and tables.

    With refresh_seconds > 0 a daemon thread per process keeps it current and a request only
    reads memory. With 0 (the tests) every lookup syncs first, so a publish shows at once.
    """

    # Local table files no manifest names any more are removed after this long (another
    # worker of the node may still switch over; a mapped file stays readable once unlinked).
    UNUSED_TABLE_SECONDS = 3600
    # Logged once per this many seconds while the store stays unreachable.
    WARN_EVERY_SECONDS = 60
    MISSING_RETRY_SECONDS = 60

    def __init__(self, store: TableStore, refresh_seconds: float, node_dir: Path | None = None):
        self._store = store
        self._refresh_seconds = refresh_seconds
        self._node_dir = Path(node_dir) if node_dir is not None else None
        self._held: dict[str, _Held] = {}
        self._tables: dict[tuple[int, int], Table] = {}
        self._seen_version: str | None = None
        self._sync_lock = threading.Lock()
        self._synced = threading.Event()
        self._started_pid = 0
        self._warned_at = -float("inf")
        # Manifests that failed to load (logged once each), tables found missing (asked for
        # again after MISSING_RETRY_SECONDS, logged once per try).
        self._failed: dict[str, bytes] = {}
        self._missing: dict[tuple[int, int], float] = {}
        self._stopped = threading.Event()

    def client(self, public_key: str) -> ClientView | None:
        if self._refresh_seconds <= 0:
            self.sync()
        elif self._started_pid != os.getpid():
            self.start()
        held = self._held.get(public_key)
        return held.view if held is not None else None

    def start(self) -> None:
        """Load the node's local copy and start the refresh thread (once per process: a
        forked worker starts its own). Nothing to start when every lookup syncs itself."""
        if self._refresh_seconds <= 0:
            return
        with self._sync_lock:
            if self._started_pid == os.getpid():
                return
            self._started_pid = os.getpid()
            self._synced = threading.Event()
            self._local_load()
        self._stopped = threading.Event()
        thread = threading.Thread(
            target=self._run, args=(self._stopped,), name="delivery-tables", daemon=True
        )
        thread.start()
        if not self._held:
            # A node with no local copy waits briefly for its first sync, never longer.
            self._synced.wait(0.05)

    def _run(self, stopped: threading.Event) -> None:
        while not stopped.is_set():
            try:
                self.sync()
            except Exception:
                # Whatever went wrong, the next round tries again: a dead thread would freeze
                # this process on its current tables for good.
                logger.exception("table refresh failed")
            self._synced.set()
            stopped.wait(self._refresh_seconds)

    def stop(self) -> None:
        """End the refresh thread (tests, and a process shutting its tables down)."""
        self._stopped.set()

    def sync(self) -> None:
        """Take in whatever was published since the last sync; keep what is held on failure."""
        with self._sync_lock:
            try:
                version = self._store.manifests_version()
                if version == self._seen_version and self._is_complete():
                    return
                raws = self._store.manifests_all()
            except Exception:
                self._warn("table store unreachable; serving the copy held")
                return
            if not raws and self._held:
                # A store emptied by a restart without persistence, or a failover to an empty
                # replica, is not every client unpublished: keep serving until it is filled.
                self._warn("table store holds no manifests; serving the copy held")
                return
            self._warned_at = -float("inf")
            is_whole = self._apply(raws)
            # A manifest that failed to load is read again next time, not skipped as seen.
            self._seen_version = version if is_whole else None

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= self.WARN_EVERY_SECONDS:
            self._warned_at = now
            logger.warning(message, exc_info=True)

    def _is_complete(self) -> bool:
        return all(held.is_complete for held in self._held.values())

    def _apply(self, raws: dict[str, bytes]) -> bool:
        """Swap in the views of these manifests; False when one of them could not be loaded
        (its client keeps the view held, if any)."""
        held_now: dict[str, _Held] = {}
        tables: dict[tuple[int, int], Table] = {}
        is_whole = True
        for public_key, raw in raws.items():
            held = self._held.get(public_key)
            if held is None or raw != held.raw or not held.is_complete:
                try:
                    held = self._view_load(raw)
                except Exception:
                    is_whole = False
                    if self._failed.get(public_key) != raw:
                        self._failed[public_key] = raw
                        logger.exception("could not load the published tables of %s", public_key)
                    if held is None:
                        continue
                else:
                    self._failed.pop(public_key, None)
                    self._manifest_keep(public_key, raw)
            held_now[public_key] = held
            for placement in held.view.placements.values():
                if placement.table is not None:
                    table = placement.table
                    tables[(table.campaign_id, table.version)] = table
        for public_key in set(self._held) - set(held_now):
            if public_key not in raws:
                self._manifest_keep(public_key, None)
        # Readers take one reference or the other: never a mix.
        self._held, self._tables = held_now, tables
        self._local_prune()
        return is_whole

    def _view_load(self, raw: bytes, *, fetch: bool = True) -> _Held:
        manifest = orjson.loads(raw)
        placements = {}
        is_complete = True
        for key, placement in manifest["placements"].items():
            table = None
            if placement["version"] is not None:
                ident = (placement["campaign_id"], placement["version"])
                table = self._tables.get(ident) or self._table_load(*ident, fetch=fetch)
                if table is None:
                    # Keep serving the campaign's older version held, if any; else its default.
                    is_complete = False
                    table = max(
                        (t for t in self._tables.values() if t.campaign_id == ident[0]),
                        key=lambda t: t.version,
                        default=None,
                    )
            placements[key] = PlacementView(
                key=key,
                campaign_id=placement["campaign_id"],
                campaign_key=placement["campaign"],
                default=placement["default"],
                table=table,
                cap_views=(placement.get("cap") or {}).get("views"),
                cap_period=(placement.get("cap") or {}).get("per", "day"),
            )
        view = ClientView(
            client_id=manifest["client_id"],
            public_key=manifest["public_key"],
            origins=frozenset(manifest["origins"]),
            placements=placements,
            tag=manifest["tag"],
            time_zone=manifest.get("time_zone", "UTC"),
        )
        return _Held(raw=raw, view=view, is_complete=is_complete)

    def _table_path(self, campaign_id: int, version: int) -> Path | None:
        if self._node_dir is None:
            return None
        return self._node_dir / "tables" / f"{campaign_id}-{version}.cmt"

    def _table_load(self, campaign_id: int, version: int, *, fetch: bool) -> Table | None:
        path = self._table_path(campaign_id, version)
        if path is not None and path.exists():
            try:
                return table_map(path)
            except (OSError, TableFormatError):
                logger.warning("local copy of table %s v%s unreadable", campaign_id, version)
        if not fetch:
            return None
        missed_at = self._missing.get((campaign_id, version))
        retry_after = self.MISSING_RETRY_SECONDS if self._refresh_seconds > 0 else 0
        if missed_at is not None and time.monotonic() - missed_at < retry_after:
            return None
        raw = self._store.table_get(campaign_id, version)
        if raw is None:
            # Only this campaign falls back to its default; the client's others still serve.
            self._missing[(campaign_id, version)] = time.monotonic()
            logger.error("table %s v%s is named but missing", campaign_id, version)
            return None
        self._missing.pop((campaign_id, version), None)
        table = table_decode(raw)
        if path is None:
            return table
        file_create(path, raw)
        return table_map(path)

    def _manifest_keep(self, public_key: str, raw: bytes | None) -> None:
        """The node's copy of a manifest, read back when a process starts."""
        if self._node_dir is None:
            return
        path = self._node_dir / "manifests" / f"{public_key}.json"
        try:
            if raw is None:
                path.unlink(missing_ok=True)
            else:
                file_write(path, raw)
        except OSError:
            logger.warning("could not keep the manifest of %s on this node", public_key)

    def _local_load(self) -> None:
        if self._node_dir is None:
            return
        raws = {}
        for path in (self._node_dir / "manifests").glob("*.json"):
            try:
                raws[path.stem] = path.read_bytes()
            except OSError:
                continue
        held = {}
        for public_key, raw in raws.items():
            try:
                # Only tables this node already holds: the network waits for the thread.
                held[public_key] = self._view_load(raw, fetch=False)
            except Exception:
                logger.exception("could not load the local copy of %s", public_key)
        self._held = held
        self._tables = {
            (p.table.campaign_id, p.table.version): p.table
            for h in held.values()
            for p in h.view.placements.values()
            if p.table is not None
        }

    def _local_prune(self) -> None:
        if self._node_dir is None:
            return
        in_use = {f"{campaign}-{version}.cmt" for campaign, version in self._tables}
        cutoff = time.time() - self.UNUSED_TABLE_SECONDS
        for path in (self._node_dir / "tables").glob("*.cmt"):
            try:
                if path.name not in in_use and path.stat().st_mtime < cutoff:
                    path.unlink()
            except OSError:
                continue


_local: LocalTables | None = None


def _after_fork_in_child() -> None:
    # A fork while the parent's refresh thread held the lock would leave it held for good in
    # the child, whose thread does not exist: the child starts afresh with its own.
    if _local is not None:
        _local._sync_lock = threading.Lock()
        _local._started_pid = 0


os.register_at_fork(after_in_child=_after_fork_in_child)


def local_tables() -> LocalTables:
    """This process's copy of the published tables."""
    global _local
    if _local is None:
        _local = LocalTables(
            store_get(), settings.DELIVERY_REFRESH_SECONDS, settings.DELIVERY_NODE_DIR
        )
    return _local


def local_tables_reset() -> None:
    global _local
    if _local is not None:
        _local.stop()
    _local = None
    store_get.cache_clear()
