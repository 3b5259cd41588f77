"""Statistics of a comparison across seeds: bootstrap confidence intervals and paired Wilcoxon tests.

Seeds are few (3–10), so intervals use the percentile bootstrap (BCa needs more points to estimate its
acceleration) and tests are the paired Wilcoxon signed-rank test, exact when scipy can do it.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

N_RESAMPLES = 9999


@dataclass(frozen=True)
class Interval:
    """Mean of n values and its two-sided bootstrap confidence interval [low, high] (nan when n < 2)."""

    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class PairedTest:
    """A paired two-sided test: its name, the statistic, p-value, number of pairs n and of non-zero differences."""

    name: str
    statistic: float
    pvalue: float
    n: int
    n_nonzero: int


def bootstrap_ci(values: Sequence[float], *, confidence: float = 0.95, seed: int = 0) -> Interval:
    """Mean of `values` with its percentile-bootstrap CI of the mean (`scipy.stats.bootstrap`, 9999 resamples).

    Equal values give a zero-width interval; fewer than two values give nan bounds.
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if len(x) < 2:
        return Interval(mean, math.nan, math.nan, 1)
    if np.ptp(x) == 0:
        return Interval(mean, mean, mean, len(x))
    res = stats.bootstrap(
        (x,), np.mean, confidence_level=confidence, n_resamples=N_RESAMPLES, method="percentile",
        rng=np.random.default_rng(seed),
    )
    return Interval(mean, float(res.confidence_interval.low), float(res.confidence_interval.high), len(x))


def paired_wilcoxon(
    treatment: Mapping[Hashable, float], control: Mapping[Hashable, float], *, paired_by: str
) -> PairedTest | None:
    """Two-sided Wilcoxon signed-rank test of treatment − control over the keys both have (a seed, a problem).

    Pairs are matched by key, never by position. Zero differences are dropped (Wilcoxon's convention; n_nonzero
    says how many remain); with none left the difference is exactly 0 and p = 1. None when no key is shared.
    """
    keys = [k for k in treatment if k in control and _finite(treatment[k]) and _finite(control[k])]
    if not keys:
        return None
    d = np.asarray([treatment[k] - control[k] for k in keys], dtype=float)
    nonzero = int(np.count_nonzero(d))
    name = f"Wilcoxon signed-rank, two-sided, paired by {paired_by}"
    if nonzero == 0:
        return PairedTest(name, 0.0, 1.0, len(keys), 0)
    res = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return PairedTest(name, float(res.statistic), float(res.pvalue), len(keys), nonzero)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
