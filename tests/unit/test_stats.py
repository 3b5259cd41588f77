"""Bootstrap intervals and paired Wilcoxon tests against scipy and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from wmtp.analysis.stats import bootstrap_ci, min_attainable_p, min_p_at, paired_mde, paired_wilcoxon


def test_bootstrap_ci_is_scipys_percentile_interval():
    x = [2.31, 2.05, 2.47, 2.12, 2.66]
    ci = bootstrap_ci(x)
    ref = stats.bootstrap((np.array(x),), np.mean, confidence_level=0.95, n_resamples=9999, method="percentile",
                          rng=np.random.default_rng(0)).confidence_interval
    assert ci.mean == pytest.approx(sum(x) / 5) and ci.n == 5
    assert (ci.low, ci.high) == pytest.approx((ref.low, ref.high))
    assert min(x) <= ci.low < ci.mean < ci.high <= max(x)


def test_bootstrap_ci_of_two_values_is_hand_computable():
    # resampling 2 values: means 1, 2 or 3 with probabilities 1/4, 1/2, 1/4 → the 2.5% / 97.5% quantiles are 1 and 3
    ci = bootstrap_ci([1.0, 3.0])
    assert ci.low == pytest.approx(1.0) and ci.high == pytest.approx(3.0)


def test_bootstrap_ci_degenerate_inputs():
    same = bootstrap_ci([0.5, 0.5, 0.5])
    assert (same.mean, same.low, same.high) == (0.5, 0.5, 0.5)
    one = bootstrap_ci([1.5])
    assert one.mean == 1.5 and math.isnan(one.low) and math.isnan(one.high) and one.n == 1
    assert bootstrap_ci([None, float("nan"), 2.0]).n == 1  # missing values are not data
    assert bootstrap_ci([]).n == 0


def test_wilcoxon_exact_p_by_hand():
    # all 5 differences positive and distinct: W- = 0, exact two-sided p = 2 · (1/2^5)
    treatment = {s: 1.0 + s for s in range(5)}
    control = {s: 0.5 * s for s in range(5)}
    t = paired_wilcoxon(treatment, control, paired_by="seed")
    assert t.pvalue == pytest.approx(2 / 32) and t.statistic == 0 and t.n == 5 and t.n_nonzero == 5
    assert "signed-rank" in t.name and "paired by seed" in t.name
    # differences +1, −2, +3, +4, −5: W- = 2 + 5 = 7; exact p = 2 · #{subsets of 1..5 with rank sum ≤ 7} / 32
    d = [1, -2, 3, 4, -5]
    t = paired_wilcoxon({i: float(v) for i, v in enumerate(d)}, {i: 0.0 for i in range(5)}, paired_by="seed")
    n_le_7 = sum(1 for m in range(32) if sum(r for r in range(1, 6) if m >> (r - 1) & 1) <= 7)
    assert t.statistic == 7 and t.pvalue == pytest.approx(2 * n_le_7 / 32)
    assert t.pvalue == pytest.approx(stats.wilcoxon(d).pvalue)


def test_pairs_are_matched_by_key_not_position_and_not_pooled():
    # seeds differ a lot from each other; within a seed the treatment is always a little better
    base = {s: 10.0 * s for s in range(8)}
    better = {s: 10.0 * s - 0.1 for s in reversed(range(8))}  # other insertion order: pairing must use the key
    paired = paired_wilcoxon(better, base, paired_by="seed")
    assert paired.pvalue == pytest.approx(2 / 2**8)
    pooled = stats.mannwhitneyu(list(better.values()), list(base.values())).pvalue
    assert pooled > 0.5  # the pooled samples look alike; only pairing shows the difference
    mispaired = stats.wilcoxon(np.array(list(better.values())) - np.array(list(base.values()))).pvalue
    assert mispaired > paired.pvalue  # positions (reversed) would pair different seeds


def test_wilcoxon_drops_zero_differences_and_handles_no_overlap():
    t = paired_wilcoxon({0: 1.0, 1: 1.0, 2: 2.0}, {0: 1.0, 1: 0.0, 2: 1.0}, paired_by="problem")
    assert t.n == 3 and t.n_nonzero == 2
    assert t.pvalue == pytest.approx(stats.wilcoxon([0.0, 1.0, 1.0], zero_method="wilcox").pvalue)
    assert paired_wilcoxon({0: 1.0}, {0: 1.0}, paired_by="seed").pvalue == 1.0
    assert paired_wilcoxon({0: 1.0}, {1: 1.0}, paired_by="seed") is None
    assert paired_wilcoxon({0: 1.0, 1: 2.0}, {0: 0.0, 1: None}, paired_by="seed").n == 1


def test_smallest_attainable_p_by_hand():
    assert min_p_at(5) == 0.0625 and min_p_at(5) > 0.05  # 5 seeds can never give p < 0.05
    assert min_p_at(6) == 2 / 2**6 and min_p_at(1) == 1.0 and min_p_at(0) == 1.0
    assert min_p_at(8) == pytest.approx(2 / 2**8)
    assert min_attainable_p([0.3, -0.1, 0.2, -0.5, 0.4]) == 0.0625  # the signs do not matter, only |d|
    assert min_attainable_p([0.3, 0.0, -0.1, 0.0, 0.2]) == 2 / 2**3  # zeros are dropped: three pairs left
    assert min_attainable_p([0.0, 0.0]) == 1.0
    # tied |d| (discrete pass@1 differences): scipy's exact distribution up to 50 pairs (all one sign: 2/2^n) ...
    assert min_attainable_p([0.2] * 6 + [-0.4] * 4) == 2 / 2**10
    # ... and beyond, its normal approximation with the tie correction (average ranks 30.5 and 62.5)
    n, tied = 64, [0.2] * 60 + [0.4] * 4
    var = n * (n + 1) * (2 * n + 1) / 24 - ((60**3 - 60) + (4**3 - 4)) / 48
    z = (60 * 30.5 + 4 * 62.5 - n * (n + 1) / 4) / math.sqrt(var)
    assert min_attainable_p(tied) == pytest.approx(2 * stats.norm.sf(z), rel=1e-9)


def test_mde_by_hand():
    d = [0.1, 0.3, -0.2, 0.4, 0.0, 0.2]
    sd = math.sqrt(sum((x - sum(d) / 6) ** 2 for x in d) / 5)
    z = 1.959963984540054 + 0.8416212335729143  # z_0.975 + z_0.8
    assert paired_mde(d) == pytest.approx(z * sd / math.sqrt(6 * 3 / math.pi))
    assert paired_mde(d, alpha=0.01, power=0.9) == pytest.approx(
        (2.5758293035489 + 1.2815515655446004) * sd / math.sqrt(6 * 3 / math.pi))
    assert paired_mde([0.5]) is None and paired_mde([0.2, 0.2]) == 0.0


def test_paired_test_carries_min_p_mde_and_whether_p_below_alpha_is_reachable():
    z = 1.959963984540054 + 0.8416212335729143
    d = [0.1 * s for s in range(1, 6)]
    five = paired_wilcoxon({s: 1.0 + 0.1 * s for s in range(1, 6)}, {s: 1.0 for s in range(1, 6)}, paired_by="seed")
    assert five.min_pvalue == 0.0625 and not five.detectable  # p < 0.05 unreachable: no effect is detectable
    assert five.mde == pytest.approx(z * np.std(d, ddof=1) / math.sqrt(5 * 3 / math.pi))  # the formula's value
    six = paired_wilcoxon({s: 1.0 + 0.1 * s for s in range(6)}, {s: 1.0 for s in range(6)}, paired_by="seed")
    assert six.n_nonzero == 5 and six.min_pvalue == 0.0625 and not six.detectable  # one zero difference dropped
    seven = paired_wilcoxon({s: 1.0 + 0.1 * s for s in range(1, 8)}, {s: 1.0 for s in range(1, 8)},
                            paired_by="seed")
    assert seven.min_pvalue == pytest.approx(2 / 2**7) and seven.detectable
    assert seven.mde == pytest.approx(paired_mde([0.1 * s for s in range(1, 8)]))
