"""Where published lookup tables live (D2): Redis (REDIS_URL) or a directory (the embedded
default). Per client a manifest (small, rewritten on every publish) in one hash with a version
counter bumped by every write, so one GET tells a node whether anything changed; per
(campaign, version) an immutable table blob; and the tag versions served."""

from __future__ import annotations

import os
import tempfile
import time
from functools import cache
from pathlib import Path
from typing import Protocol

from django.conf import settings


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
