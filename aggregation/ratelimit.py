"""Per-client token buckets for collect (A1). Pure: the clock is passed in.

Each web process keeps its own buckets (no network round trip on the ingest path), so a node
with N processes admits up to N times the rate: set COLLECT_RATE_PER_SECOND per process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated_at: float


class RateLimiter:
    def __init__(self, *, rate: float, burst: float, max_keys: int = 100_000):
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._buckets: dict[int, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: int, amount: int, *, now: float) -> float:
        """Take `amount` tokens: 0.0 when granted, else the seconds until they would be."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self._max_keys:
                    self._buckets.clear()
                bucket = self._buckets[key] = _Bucket(tokens=self.burst, updated_at=now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated_at) * self.rate)
            bucket.updated_at = now
            if amount <= bucket.tokens:
                bucket.tokens -= amount
                return 0.0
            return (amount - bucket.tokens) / self.rate
