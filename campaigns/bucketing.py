"""Deterministic assignment of visitors to test groups (C1, B2). Pure: no ORM.

A visitor's bucket is the first 8 bytes of SHA-256("<salt>:<visitor id>") read as a big-endian
integer, modulo BUCKETS (10,000). Every node and every build computes the same bucket, so a
visitor stays in their group across rebuilds and nodes.

A test's allocation lists, for each bucket, the group (or the holdout) that owns it. When the
shares change, allocation_update moves only as many buckets as the new shares require: a group
that shrinks gives up its highest buckets, a group that grows takes the lowest free ones, and
every other bucket stays where it was. So only the visitors of the moved buckets change group.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

BUCKETS = 10_000
# The holdout's key in an allocation: a share of the segment that sees nothing at all.
HOLDOUT = "holdout"


def bucket_of(salt: str, visitor_id: str) -> int:
    digest = hashlib.sha256(f"{salt}:{visitor_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def buckets_for(shares: Mapping[str, int]) -> dict[str, int]:
    """Buckets per group from shares in basis points (1/100 of a percent) summing to 10,000."""
    if sum(shares.values()) != BUCKETS or any(share < 0 for share in shares.values()):
        raise ValueError(f"shares must be at least 0 and add up to {BUCKETS} basis points")
    return dict(shares)


def allocation_update(current: list[str | None] | None, shares: Mapping[str, int]) -> list[str]:
    """The allocation (bucket -> group key) for these shares, moving as few buckets as possible
    from `current` (None or empty: a first allocation, groups in the order given)."""
    targets = buckets_for(shares)
    if not current:
        allocation: list[str] = []
        for key, count in targets.items():
            allocation += [key] * count
        return allocation
    if len(current) != BUCKETS:
        raise ValueError(f"an allocation has {BUCKETS} buckets")
    allocation_or_free: list[str | None] = [
        owner if owner in targets else None for owner in current
    ]
    held: dict[str, list[int]] = {key: [] for key in targets}
    for bucket, owner in enumerate(allocation_or_free):
        if owner is not None:
            held[owner].append(bucket)
    for key, buckets in held.items():
        for bucket in buckets[targets[key] :]:  # a shrinking group gives up its highest
            allocation_or_free[bucket] = None
    free = iter(bucket for bucket, key in enumerate(allocation_or_free) if key is None)
    for key in targets:
        for _ in range(targets[key] - min(len(held[key]), targets[key])):
            allocation_or_free[next(free)] = key
    return [key for key in allocation_or_free if key is not None]


def group_of(allocation: list[str], salt: str, visitor_id: str) -> str:
    return allocation[bucket_of(salt, visitor_id)]
