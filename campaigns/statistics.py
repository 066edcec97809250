"""The statistics of A/B test results (C1, B2). Pure: numbers in, numbers out; the
distributions and tests are scipy's.

- Conversion: the share of a group's visitors who bought. Difference to control with a Wald
  confidence interval; two-sided two-proportion z-test with the pooled rate.
- Revenue per visitor (zeros included): each visitor's revenue capped at the 99th percentile of
  both groups together (winsorized: one huge order cannot decide a test); difference to control
  with Welch's t-test and its confidence interval (unequal variances).
- Lift: a difference relative to the control's value, its interval divided the same way.
- Sample ratio mismatch: chi-square of the groups' visitors against their shares; p < 0.001
  means the split itself is broken and no result of the test should be trusted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
SRM_P = 0.001
WINSOR_PERCENTILE = 99


@dataclass(frozen=True)
class Sample:
    """One group's visitors: how many bought, and every visitor's revenue (zeros included)."""

    visitors: int
    conversions: int
    revenues: Sequence[float]

    @property
    def conversion_rate(self) -> float | None:
        return self.conversions / self.visitors if self.visitors else None

    @property
    def revenue_per_visitor(self) -> float | None:
        return float(np.mean(self.revenues)) if self.visitors else None


@dataclass(frozen=True)
class Comparison:
    difference: float
    low: float
    high: float
    p_value: float
    lift: float | None  # relative to control; None when control's value is 0
    lift_low: float | None
    lift_high: float | None

    @property
    def is_significant(self) -> bool:
        return self.p_value < ALPHA


def lift_text(comparison: Comparison | None) -> str:
    """A lift with its interval, as the console shows it: "+12.0% (+3.1% to +20.9%)"."""
    if comparison is None or None in (comparison.lift, comparison.lift_low, comparison.lift_high):
        return "-"
    return f"{comparison.lift:+.1%} ({comparison.lift_low:+.1%} to {comparison.lift_high:+.1%})"


def _lifted(difference: float, low: float, high: float, base: float, p: float) -> Comparison:
    if base == 0:
        return Comparison(difference, low, high, p, None, None, None)
    return Comparison(difference, low, high, p, difference / base, low / base, high / base)


def conversion_compare(control: Sample, test: Sample, *, alpha: float = ALPHA) -> Comparison | None:
    """Two-proportion z-test of test against control; None without visitors in both."""
    if not control.visitors or not test.visitors:
        return None
    p1, p2 = control.conversions / control.visitors, test.conversions / test.visitors
    pooled = (control.conversions + test.conversions) / (control.visitors + test.visitors)
    pooled_error = math.sqrt(pooled * (1 - pooled) * (1 / control.visitors + 1 / test.visitors))
    p_value = 1.0 if pooled_error == 0 else float(2 * stats.norm.sf(abs(p2 - p1) / pooled_error))
    error = math.sqrt(p1 * (1 - p1) / control.visitors + p2 * (1 - p2) / test.visitors)
    margin = float(stats.norm.ppf(1 - alpha / 2)) * error
    return _lifted(p2 - p1, p2 - p1 - margin, p2 - p1 + margin, p1, p_value)


def revenue_compare(control: Sample, test: Sample, *, alpha: float = ALPHA) -> Comparison | None:
    """Welch's t-test of winsorized revenue per visitor; None when it cannot be computed (fewer
    than two visitors in a group, or no variance at all)."""
    if control.visitors < 2 or test.visitors < 2:
        return None
    first = np.asarray(control.revenues, dtype=float)
    second = np.asarray(test.revenues, dtype=float)
    cap = np.percentile(np.concatenate([first, second]), WINSOR_PERCENTILE)
    first, second = np.minimum(first, cap), np.minimum(second, cap)
    if first.var() == 0 and second.var() == 0:
        return None
    result = stats.ttest_ind(second, first, equal_var=False)
    interval = result.confidence_interval(1 - alpha)
    difference = float(second.mean() - first.mean())
    return _lifted(
        difference, float(interval.low), float(interval.high), float(first.mean()),
        float(result.pvalue),
    )  # fmt: skip


def sample_ratio_check(visitors: Sequence[int], shares: Sequence[int]) -> float | None:
    """The p-value of the groups' visitor counts against their shares (chi-square); None
    without visitors. Below SRM_P the split is broken."""
    total = sum(visitors)
    if not total or len(visitors) < 2:
        return None
    expected = [total * share / sum(shares) for share in shares]
    return float(stats.chisquare(visitors, expected).pvalue)
