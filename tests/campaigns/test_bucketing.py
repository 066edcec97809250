"""Assignment to test groups: deterministic, balanced, and moving few visitors (C1)."""

import hashlib
from collections import Counter

import pytest
from scipy.stats import chisquare

from campaigns.bucketing import BUCKETS, HOLDOUT, allocation_update, bucket_of, group_of

VISITORS = [f"visitor-{index}" for index in range(100_000)]
QUARTERS = {"control": 2500, "ten-off": 2500, "twenty-off": 2500, "25-dollars": 2500}


def test_the_bucket_is_the_documented_hash():
    digest = hashlib.sha256(b"salt-1:abc").digest()

    assert bucket_of("salt-1", "abc") == int.from_bytes(digest[:8], "big") % 10_000
    assert bucket_of("salt-1", "abc") == bucket_of("salt-1", "abc")
    assert bucket_of("salt-1", "abc") != bucket_of("salt-2", "abc")


@pytest.mark.parametrize("salt", ["golf-test", "spring-2026", "a0b1c2"])
def test_the_golf_shops_100000_visitors_split_into_four_quarters_within_one_percent(salt):
    allocation = allocation_update(None, QUARTERS)

    sizes = Counter(group_of(allocation, salt, visitor) for visitor in VISITORS)

    assert set(sizes) == set(QUARTERS)
    # Each group within 1% of the segment (1,000 visitors) of its 25,000. A fair split of
    # 100,000 has a standard deviation of 137 per group, so a hash cannot promise 1% of 25,000
    # (250) every time; the sample-ratio check below is the sharper test of balance.
    for size in sizes.values():
        assert abs(size - 25_000) <= 1_000
    assert chisquare(list(sizes.values())).pvalue >= 0.001


def test_changing_shares_moves_only_the_buckets_that_must_move():
    before = allocation_update(None, QUARTERS)
    shares = {"control": 4000, "ten-off": 2000, "twenty-off": 2000, "25-dollars": 2000}

    after = allocation_update(before, shares)

    moved = [bucket for bucket in range(BUCKETS) if before[bucket] != after[bucket]]
    assert len(moved) == 1500  # control grows by 1,500 buckets; nothing else moves
    assert {after[bucket] for bucket in moved} == {"control"}
    assert Counter(after) == Counter(shares)
    # The visitors whose group changed are exactly those of the moved buckets.
    changed = {
        visitor
        for visitor in VISITORS
        if group_of(before, "s", visitor) != group_of(after, "s", visitor)
    }
    assert changed == {visitor for visitor in VISITORS if bucket_of("s", visitor) in set(moved)}


def test_a_holdout_and_a_removed_group_free_their_buckets_for_others():
    before = allocation_update(None, {"control": 5000, "test": 5000})

    after = allocation_update(before, {HOLDOUT: 1000, "control": 4500, "test": 4500})

    assert Counter(after) == {HOLDOUT: 1000, "control": 4500, "test": 4500}
    assert sum(1 for a, b in zip(before, after, strict=True) if a != b) == 1000


@pytest.mark.parametrize("shares", [{"a": 5000, "b": 4000}, {"a": 11000, "b": -1000}])
def test_shares_must_add_up_to_the_whole(shares):
    with pytest.raises(ValueError):
        allocation_update(None, shares)
