"""Statistics of a comparison across seeds: bootstrap confidence intervals, paired Wilcoxon tests and their power.

Seeds are few (3–10), so intervals use the percentile bootstrap (BCa needs more points to estimate its
acceleration) and tests are the paired Wilcoxon signed-rank test, exact when scipy can do it.

Power of a paired test of n differences d (two-sided, level α = 0.05, power 1 − β = 0.8):

    smallest attainable p   the test's p when every non-zero difference has the same sign (scipy's Wilcoxon on
                            |d|): with n_nz non-zero, untied differences the exact p = 2 / 2^n_nz (`min_p_at`), so
                            5 seeds give 0.0625 and can never reach p < 0.05 (6 seeds: 0.03125); zero
                            differences, dropped, raise it (`min_attainable_p` of the observed differences)
    MDE                     (z_{1−α/2} + z_{1−β}) · sd(d) / √(n · 3/π)   (sd with ddof 1)

The MDE is the smallest true mean difference the test detects with probability 1 − β: the paired t-test's
normal-approximation MDE with n scaled by 3/π ≈ 0.955, the signed-rank test's asymptotic relative efficiency to
the t-test on normal differences (Hodges & Lehmann 1956). It is approximate for small n and for discrete
differences (per-problem pass@1). When the smallest attainable p exceeds α no effect is detectable at all
(`PairedTest.detectable` false) whatever the formula says.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

N_RESAMPLES = 9999
ALPHA, POWER = 0.05, 0.8
WILCOXON_ARE = 3 / math.pi  # signed-rank vs paired t-test, normal differences


@dataclass(frozen=True)
class Interval:
    """Mean of n values and its two-sided bootstrap confidence interval [low, high] (nan when n < 2)."""

    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class PairedTest:
    """A paired two-sided test: its name, the statistic, p-value, number of pairs n and of non-zero differences,
    the smallest p it could attain with these |differences|, its MDE (module docstring; None for n < 2) and
    whether p < α is attainable at all (detectable; false: the MDE is the formula's, no effect is detectable)."""

    name: str
    statistic: float
    pvalue: float
    n: int
    n_nonzero: int
    min_pvalue: float = 1.0
    mde: float | None = None
    detectable: bool = False


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
        return PairedTest(name, 0.0, 1.0, len(keys), 0, 1.0, paired_mde(d), False)
    res = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    min_p = min_attainable_p(d)
    return PairedTest(name, float(res.statistic), float(res.pvalue), len(keys), nonzero, min_p, paired_mde(d),
                      min_p <= ALPHA)


def min_attainable_p(differences: Sequence[float]) -> float:
    """Smallest two-sided Wilcoxon signed-rank p over the sign patterns of these differences: scipy's p of their
    absolute values (all one sign; zeros dropped). Up to 50 non-zero differences scipy's exact distribution gives
    exactly 2 / 2^n (ties too); beyond, its normal approximation (with the tie correction)."""
    d = np.abs(np.asarray(differences, dtype=float))
    d = d[d != 0]
    if len(d) == 0:
        return 1.0
    return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def min_p_at(n: int) -> float:
    """Smallest two-sided Wilcoxon signed-rank p that n pairs can give (all non-zero, untied, of one sign):
    2 / 2^n from scipy's exact distribution (its normal approximation beyond 50 pairs); 1 for n = 0."""
    return min_attainable_p(np.arange(1, n + 1)) if n > 0 else 1.0


def paired_mde(differences: Sequence[float], *, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """(z_{1−α/2} + z_power) · sd(d) / √(n · 3/π): the mean difference a two-sided paired signed-rank test of
    these n differences detects with probability `power` (module docstring); None for n < 2."""
    d = np.asarray(differences, dtype=float)
    if len(d) < 2:
        return None
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(z * d.std(ddof=1) / math.sqrt(len(d) * WILCOXON_ARE))


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
