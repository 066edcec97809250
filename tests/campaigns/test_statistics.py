"""A/B statistics (B2), checked against values computed independently here, on the golf
shop's test with a known effect, and on A/A tests."""

import math
import random

import numpy as np
import pytest
from scipy import stats

from campaigns.statistics import (
    Sample,
    conversion_compare,
    revenue_compare,
    sample_ratio_check,
)


def _sample(rng, visitors, rate, order_value):
    revenues = [
        rng.expovariate(1 / order_value) if rng.random() < rate else 0.0 for _ in range(visitors)
    ]
    return Sample(visitors, sum(1 for value in revenues if value > 0), revenues)  # fmt: skip


def test_conversion_matches_the_textbook_two_proportion_z_test():
    control, test = Sample(10_000, 500, []), Sample(10_000, 600, [])

    result = conversion_compare(control, test)

    p1, p2, pooled = 0.05, 0.06, 1100 / 20_000
    z = (p2 - p1) / math.sqrt(pooled * (1 - pooled) * (2 / 10_000))
    p_value = math.erfc(abs(z) / math.sqrt(2))  # two-sided, normal
    margin = 1.959963984540054 * math.sqrt(p1 * (1 - p1) / 10_000 + p2 * (1 - p2) / 10_000)
    assert result.p_value == pytest.approx(p_value, rel=1e-9)
    assert (result.low, result.high) == pytest.approx((0.01 - margin, 0.01 + margin), rel=1e-9)
    assert result.lift == pytest.approx(0.2)
    assert result.is_significant


def test_revenue_matches_welch_computed_by_hand_after_winsorizing():
    rng = random.Random(5)
    control = _sample(rng, 3000, 0.05, 80)
    test = _sample(rng, 3000, 0.07, 80)
    test = Sample(test.visitors, test.conversions, [*test.revenues[:-1], 1_000_000.0])

    result = revenue_compare(control, test)

    values = np.array(control.revenues + list(test.revenues))
    cap = np.percentile(values, 99)
    a = np.minimum(np.array(control.revenues), cap)
    b = np.minimum(np.array(test.revenues), cap)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (b.mean() - a.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert result.difference == pytest.approx(b.mean() - a.mean())
    assert result.p_value == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9)
    assert (result.low, result.high) == pytest.approx(
        (b.mean() - a.mean() - half, b.mean() - a.mean() + half), rel=1e-9
    )
    # The 1,000,000 order was capped: the difference stays that of ordinary orders.
    assert result.difference < 10


def test_the_golf_shops_test_finds_its_known_effects():
    # 100,000 repeat visitors, 25,000 per group: control 5% buy; 10% off lifts it to 5.5%;
    # 20% off to 6.5%; $25 off changes nothing.
    rng = random.Random(2026)
    control = _sample(rng, 25_000, 0.05, 120)
    groups = {
        "10% off": _sample(rng, 25_000, 0.055, 120),
        "20% off": _sample(rng, 25_000, 0.065, 120),
        "$25 off": _sample(rng, 25_000, 0.05, 120),
    }

    results = {name: conversion_compare(control, sample) for name, sample in groups.items()}

    assert results["20% off"].is_significant and results["20% off"].lift > 0.15
    assert results["20% off"].lift_low < 0.3 < results["20% off"].lift_high
    assert not results["$25 off"].is_significant
    assert results["$25 off"].lift_low < 0 < results["$25 off"].lift_high
    assert revenue_compare(control, groups["20% off"]).is_significant


def test_aa_tests_are_significant_at_the_stated_rate_only():
    # 1,000 A/A tests of 2,000 visitors a side, both buying at 10%: about 5% come out
    # "significant" by chance, as alpha = 0.05 says; far more would mean a broken test.
    rng = np.random.default_rng(11)
    significant = 0
    for _ in range(1000):
        a, b = rng.binomial(2000, 0.1), rng.binomial(2000, 0.1)
        significant += conversion_compare(Sample(2000, a, []), Sample(2000, b, [])).is_significant
    assert 30 <= significant <= 70  # 5% of 1,000 is 50; 30-70 holds with 99.6% probability


def test_sample_ratio_mismatch_is_flagged_below_one_in_a_thousand():
    fair = sample_ratio_check([25_100, 24_950, 24_980, 24_970], [2500] * 4)
    broken = sample_ratio_check([26_000, 24_000, 25_000, 25_000], [2500] * 4)

    assert fair > 0.001
    assert broken < 0.001
    assert broken == pytest.approx(stats.chi2.sf(160.0, 3), rel=1e-6)


def test_nothing_to_compare_gives_none():
    assert conversion_compare(Sample(0, 0, []), Sample(10, 1, [0.0] * 10)) is None
    assert revenue_compare(Sample(5, 0, [0.0] * 5), Sample(5, 0, [0.0] * 5)) is None
    assert sample_ratio_check([0, 0], [5000, 5000]) is None
