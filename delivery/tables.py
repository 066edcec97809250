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
import mmap
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
from django.conf import settings

logger = logging.getLogger(__name__)


class TableStore(Protocol):
    def manifests_version(self) -> str: ...
    def manifests_all(self) -> dict[str, bytes]: ...
    def manifest_get(self, public_key: str) -> bytes | None: ...
    def manifest_put(self, public_key: str, data: bytes) -> None: ...
    def table_get(self, campaign_id: int, version: int) -> bytes | None: ...
    def table_exists(self, campaign_id: int, version: int) -> bool: ...
    def table_put(self, campaign_id: int, version: int, data: bytes) -> None: ...
    def table_delete(self, campaign_id: int, version: int) -> None: ...
    def tag_get(self, public_key: str, version: str) -> bytes | None: ...
    def tag_put(self, public_key: str, version: str, data: bytes) -> None: ...


# A tag version once served stays available this long, so that pinned snippets keep working
# after a deploy or a change of the client's tag settings until the client pastes the new one.
TAG_VERSION_DAYS = 30


class RedisTableStore:
    """Manifests in one hash plus a counter bumped with every write (one GET tells a node
    whether anything changed); tables and tag versions as plain keys."""

    def __init__(self, url: str, prefix: str = "cm"):
        import redis

        # Bounded timeouts: only the refresh thread and publishers wait on these.
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=0.5)
        # The tag requests read and keep tag versions: they give up within 50 ms each way.
        self._fast = redis.Redis.from_url(url, socket_timeout=0.05, socket_connect_timeout=0.05)
        self._manifests = f"{prefix}:manifests"
        self._version = f"{prefix}:manifests:version"
        self._prefix = prefix

    def _table_key(self, campaign_id: int, version: int) -> str:
        return f"{self._prefix}:table:{campaign_id}:{version}"

    def manifests_version(self) -> str:
        value = self._redis.get(self._version)
        return value.decode() if isinstance(value, bytes) else "0"

    def manifests_all(self) -> dict[str, bytes]:
        raw: dict[bytes, bytes] = self._redis.hgetall(self._manifests)  # type: ignore[assignment]
        return {key.decode(): value for key, value in raw.items()}

    def manifest_get(self, public_key: str) -> bytes | None:
        return self._redis.hget(self._manifests, public_key)  # type: ignore[return-value]

    def manifest_put(self, public_key: str, data: bytes) -> None:
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._manifests, public_key, data)
            pipe.incr(self._version)
            pipe.execute()

    def table_get(self, campaign_id: int, version: int) -> bytes | None:
        return self._redis.get(self._table_key(campaign_id, version))  # type: ignore[return-value]

    def table_exists(self, campaign_id: int, version: int) -> bool:
        return bool(self._redis.exists(self._table_key(campaign_id, version)))

    def table_put(self, campaign_id: int, version: int, data: bytes) -> None:
        self._redis.set(self._table_key(campaign_id, version), data)

    def table_delete(self, campaign_id: int, version: int) -> None:
        self._redis.delete(self._table_key(campaign_id, version))

    def tag_get(self, public_key: str, version: str) -> bytes | None:
        return self._fast.get(f"{self._prefix}:tag:{public_key}:{version}")  # type: ignore[return-value]

    def tag_put(self, public_key: str, version: str, data: bytes) -> None:
        key = f"{self._prefix}:tag:{public_key}:{version}"
        self._fast.set(key, data, ex=TAG_VERSION_DAYS * 86400)


def _written_aside(path: Path, data: bytes) -> str:
    """The data in a temporary file beside `path`, on disk: the caller renames or links it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return temporary


def file_write(path: Path, data: bytes) -> None:
    """Write aside, then rename over: readers see the whole old file or the whole new one."""
    temporary = _written_aside(path, data)
    try:
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def file_create(path: Path, data: bytes) -> None:
    """Create a file that never changes once there: when several processes of a node fetch the
    same table at once, the first one's file stays and every process maps that one."""
    temporary = _written_aside(path, data)
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        Path(temporary).unlink(missing_ok=True)


class FileTableStore:
    def __init__(self, directory: Path):
        self._directory = Path(directory)

    def _manifest_path(self, public_key: str) -> Path:
        return self._directory / "manifests" / f"{public_key}.json"

    def _table_path(self, campaign_id: int, version: int) -> Path:
        return self._directory / "tables" / f"{campaign_id}-{version}.cmt"

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def manifests_version(self) -> str:
        # Every manifest write is a rename, which gives the file a new inode and mtime.
        try:
            entries = os.scandir(self._directory / "manifests")
        except FileNotFoundError:
            return "0"
        with entries:
            stats = sorted(
                (entry.name, entry.inode(), entry.stat().st_mtime_ns)
                for entry in entries
                if entry.name.endswith(".json")
            )
        return str(hash(tuple(stats)))

    def manifests_all(self) -> dict[str, bytes]:
        manifests = {}
        for path in (self._directory / "manifests").glob("*.json"):
            data = self._read(path)
            if data is not None:
                manifests[path.stem] = data
        return manifests

    def manifest_get(self, public_key: str) -> bytes | None:
        return self._read(self._manifest_path(public_key))

    def manifest_put(self, public_key: str, data: bytes) -> None:
        file_write(self._manifest_path(public_key), data)

    def table_get(self, campaign_id: int, version: int) -> bytes | None:
        return self._read(self._table_path(campaign_id, version))

    def table_exists(self, campaign_id: int, version: int) -> bool:
        return self._table_path(campaign_id, version).exists()

    def table_put(self, campaign_id: int, version: int, data: bytes) -> None:
        file_write(self._table_path(campaign_id, version), data)

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
        file_write(self._tag_path(public_key, version), data)


@cache
def store_get() -> TableStore:
    """The configured table store: Redis when REDIS_URL is set, else files under TABLE_STORE_DIR."""
    if settings.REDIS_URL:
        return RedisTableStore(settings.REDIS_URL)
    return FileTableStore(settings.TABLE_STORE_DIR)


# The table format, as stored and as kept on each node:
#   b"CMT1", header length (uint32 LE), header (JSON: campaign_id, version, width, count,
#   contents, rules, unknown), zero padding to 8 bytes, then `count` visitor ids as fixed-width
#   bytes in sorted order, their content ids as uint32 LE in the same order and, when the
#   header has rules, one uint32 LE mask per visitor: bit i set means rule i applies to them.
MAGIC = b"CMT1"
# A visitor the table knows only for its rules: without a rule that holds, the default.
DEFAULT_ID = 0xFFFFFFFF
MAX_RULES = 32


class TableFormatError(ValueError):
    pass


@dataclass(frozen=True)
class Rule:
    """An attachment with request-time conditions (D3): its content, when they hold."""

    content_id: int
    conditions: dict[str, Any]


def table_encode(
    *,
    campaign_id: int,
    version: int,
    contents: Mapping[int, Any],
    visitors: Mapping[str, int],
    rules: Sequence[Rule] = (),
    masks: Mapping[str, int] | None = None,
    unknown: tuple[int | None, int] = (None, 0),
) -> bytes:
    """One table in the stored format: 1,000,000 visitors take about 1 s and 36 MB.

    `unknown` is the answer for a visitor the table does not name: a content id (None: the
    default) and the mask of rules that apply to them.
    """
    if len(rules) > MAX_RULES:
        raise ValueError(f"at most {MAX_RULES} attachments with request conditions")
    masks = masks or {}
    names = list(visitors) + [visitor for visitor in masks if visitor not in visitors]
    keys = [visitor.encode() for visitor in names]
    width = max(map(len, keys), default=1)
    ids = np.array(keys, dtype=f"S{width}") if keys else np.zeros(0, dtype="S1")
    values = np.fromiter(
        (visitors.get(visitor, DEFAULT_ID) for visitor in names), dtype="<u4", count=len(keys)
    )
    order = np.argsort(ids, kind="stable")
    parts = [ids[order].tobytes(), values[order].tobytes()]
    if rules:
        bits = np.fromiter((masks.get(visitor, 0) for visitor in names), "<u4", len(keys))
        parts.append(bits[order].tobytes())
    header = orjson.dumps(
        {
            "campaign_id": campaign_id,
            "version": version,
            "width": width,
            "count": len(keys),
            "contents": {str(ident): answer for ident, answer in contents.items()},
            "rules": [
                {"content_id": rule.content_id, "conditions": rule.conditions} for rule in rules
            ],
            "unknown": {"content_id": unknown[0], "mask": unknown[1]},
        }
    )
    header += b" " * (-(len(MAGIC) + 4 + len(header)) % 8)
    return b"".join([MAGIC, len(header).to_bytes(4, "little"), header, *parts])


class VisitorIndex(Mapping[str, int]):
    """Visitor id -> content id over a table's sorted arrays: a binary search (about 1 us for
    1,000,000 visitors) on memory that may be a shared file mapping. As a mapping it holds the
    visitors the table gives a content; `find` also sees those it names only for rules."""

    def __init__(self, ids: np.ndarray, values: np.ndarray, masks: np.ndarray | None = None):
        self._ids = ids
        self._values = values
        self._masks = masks
        self._count = len(ids)
        self._width = ids.dtype.itemsize
        self._with_content = int(np.count_nonzero(values != DEFAULT_ID))

    def find(self, visitor_id: str) -> int:
        """The visitor's row, or -1."""
        key = visitor_id.encode()
        if len(key) > self._width or not key:
            return -1
        index = int(self._ids.searchsorted(key))
        if index < self._count and self._ids[index] == key:
            return index
        return -1

    def content_at(self, index: int) -> int | None:
        value = int(self._values[index])
        return None if value == DEFAULT_ID else value

    def mask_at(self, index: int) -> int:
        return int(self._masks[index]) if self._masks is not None else 0

    def get(self, visitor_id: str, default: Any = None) -> Any:
        index = self.find(visitor_id)
        if index < 0:
            return default
        value = self.content_at(index)
        return default if value is None else value

    def __getitem__(self, visitor_id: str) -> int:
        value = self.get(visitor_id)
        if value is None:
            raise KeyError(visitor_id)
        return value

    def __contains__(self, visitor_id: object) -> bool:
        return isinstance(visitor_id, str) and self.get(visitor_id) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return self._with_content

    def to_dict(self) -> dict[str, int]:
        return {
            key.decode(): value
            for key, value in zip(self._ids.tolist(), self._values.tolist(), strict=True)
            if value != DEFAULT_ID
        }

    def masks_dict(self) -> dict[str, int]:
        if self._masks is None:
            return {}
        return {
            key.decode(): mask
            for key, mask in zip(self._ids.tolist(), self._masks.tolist(), strict=True)
            if mask
        }


@dataclass(frozen=True, eq=False)
class Table:
    campaign_id: int
    version: int
    contents: dict[int, dict[str, Any] | None]
    visitors: VisitorIndex
    rules: tuple[Rule, ...] = ()
    unknown_content: int | None = None
    unknown_mask: int = 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Table):
            return NotImplemented
        return (
            self.campaign_id,
            self.version,
            self.contents,
            self.rules,
            self.unknown_content,
            self.unknown_mask,
        ) == (
            other.campaign_id,
            other.version,
            other.contents,
            other.rules,
            other.unknown_content,
            other.unknown_mask,
        ) and dict(self.visitors.items()) == dict(other.visitors.items())


def table_decode(buffer: Any) -> Table:
    """A table over a buffer in the stored format (bytes, or a memory map: nothing is copied
    but the header); raises TableFormatError for anything else."""
    view = memoryview(buffer)
    if bytes(view[:4]) != MAGIC or len(view) < 8:
        raise TableFormatError("not a coremetrics table")
    length = int.from_bytes(view[4:8], "little")
    try:
        header = orjson.loads(bytes(view[8 : 8 + length]))
        width, count = int(header["width"]), int(header["count"])
        rules = tuple(Rule(rule["content_id"], rule["conditions"]) for rule in header["rules"])
        unknown = header["unknown"]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise TableFormatError(f"unreadable table header: {error}") from None
    start = 8 + length
    if len(view) != start + count * (width + 4 + (4 if rules else 0)):
        raise TableFormatError("table is truncated")
    ids = np.frombuffer(buffer, dtype=f"S{width}", count=count, offset=start)
    values = np.frombuffer(buffer, dtype="<u4", count=count, offset=start + count * width)
    masks = None
    if rules:
        masks = np.frombuffer(buffer, dtype="<u4", count=count, offset=start + count * (width + 4))
    return Table(
        campaign_id=int(header["campaign_id"]),
        version=int(header["version"]),
        contents={int(ident): answer for ident, answer in header["contents"].items()},
        visitors=VisitorIndex(ids, values, masks),
        rules=rules,
        unknown_content=unknown["content_id"],
        unknown_mask=int(unknown["mask"]),
    )


def table_map(path: Path) -> Table:
    """A table file mapped read-only: its pages are shared by every process mapping it."""
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            raise TableFormatError("empty table file")
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    return table_decode(mapped)


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
