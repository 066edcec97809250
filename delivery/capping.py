"""Frequency capping (D1 option): how many times a visitor saw a campaign's personalized
content in the current day or session, counted on this node.

The counts live in one file under DELIVERY_NODE_DIR, memory-mapped by every web process of
the node, so a visitor's views count once whichever worker answers: an open-addressing table
of SLOTS slots, each (key: 8 bytes of BLAKE2b over campaign, visitor and period; the period's
end in Unix seconds; count). An increment holds an exclusive flock on the file (two system
calls, only for capped campaigns). A slot whose period ended is reused; when a visitor's
PROBES slots are all held by current periods the view is shown uncounted (and logged): a full
table lets a view through rather than refuse one.

nginx sends a client's visitors to one node (docs/deployment.md), so the count is the
visitor's; after a failover the node taking over starts from zero for them.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import struct
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

SLOTS = 1 << 20  # 16 MB: a million visitor-campaign-periods counted at once per node
PROBES = 8
SLOT = struct.Struct("<QII")


class ViewCounter:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
        if os.fstat(self._fd).st_size != SLOTS * SLOT.size:
            # Several processes may size it at once; the same size either way, zero-filled.
            os.ftruncate(self._fd, SLOTS * SLOT.size)
        self._map = mmap.mmap(self._fd, SLOTS * SLOT.size)
        self._lock = threading.Lock()
        self._warned_at = -float("inf")

    def take(
        self, *, campaign_id: int, visitor_id: str, period: str, ends_at: int, now: int, limit: int
    ) -> bool:
        """Count one view unless the visitor already had `limit` in this period (which ends
        at `ends_at`); True when the view may be shown."""
        digest = hashlib.blake2b(
            f"{campaign_id}\0{visitor_id}\0{period}".encode(), digest_size=8
        ).digest()
        key = int.from_bytes(digest, "little") or 1
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                return self._take(key, ends_at, now, limit)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _take(self, key: int, ends_at: int, now: int, limit: int) -> bool:
        free = None
        start = key % SLOTS
        for probe in range(PROBES):
            offset = (start + probe) % SLOTS * SLOT.size
            slot_key, slot_ends_at, count = SLOT.unpack_from(self._map, offset)
            if slot_key == key and slot_ends_at > now:
                if count >= limit:
                    return False
                SLOT.pack_into(self._map, offset, key, slot_ends_at, count + 1)
                return True
            if free is None and (slot_key == 0 or slot_ends_at <= now):
                free = offset
        if free is None:
            now_seconds = time.monotonic()
            if now_seconds - self._warned_at >= 60:  # once a minute, not once a request
                self._warned_at = now_seconds
                logger.warning("view counter full around slot %d; views go uncounted", start)
            return True
        SLOT.pack_into(self._map, free, key, ends_at, 1)
        return True


_counter: ViewCounter | None = None
_counter_pid = 0


def view_counter(path: Path) -> ViewCounter:
    """This process's mapping of the node's view counts (a forked worker maps its own)."""
    global _counter, _counter_pid
    if _counter is None or _counter_pid != os.getpid():
        _counter, _counter_pid = ViewCounter(path), os.getpid()
    return _counter


def view_counter_reset() -> None:
    global _counter
    _counter = None
