"""wmtp.bench.timing: summaries, ratios and round orders on constructed numbers (no timing)."""

from __future__ import annotations

import pytest

from wmtp.bench.timing import ratio_stats, round_orders, summarize


def test_summarize_by_hand():
    s = summarize([3.0, 1.0, 100.0, 2.0, 4.0])  # sorted 1 2 3 4 100: inclusive quartiles at ranks 1 and 3
    assert s == {"median": 3.0, "min": 1.0, "max": 100.0, "q1": 2.0, "q3": 4.0, "iqr": 2.0, "n": 5}
    assert summarize([0.5]) == {"median": 0.5, "min": 0.5, "max": 0.5, "q1": 0.5, "q3": 0.5, "iqr": 0.0, "n": 1}
    with pytest.raises(ValueError, match="no times"):
        summarize([])


def test_ratio_ignores_an_outlier():
    # one step of the numerator lost 98 s to another process: the median ratio stays 2, a mean would give ≈34
    r = ratio_stats([[2.0, 2.0, 100.0]], [[1.0, 1.0, 1.0]])
    assert r["ratio"] == pytest.approx(2.0)
    assert r["ratio_min"] == pytest.approx(2.0)
    assert r["rounds"] == [pytest.approx(2.0)]


def test_ratio_of_medians_and_per_round_spread():
    # the machine got twice as slow in round 2 for both variants: the per-round ratios stay paired
    num = [[2.0, 2.2], [4.0, 4.0], [2.1, 9.0, 2.1]]
    den = [[1.0, 1.1], [2.0, 2.0], [1.0, 1.0, 1.2]]
    r = ratio_stats(num, den)
    assert r["ratio"] == pytest.approx(2.2 / 1.1)  # medians of all 7 times: 2.2 and 1.1
    assert r["ratio_min"] == pytest.approx(2.0 / 1.0)
    assert r["rounds"] == [pytest.approx(2.1 / 1.05), pytest.approx(2.0), pytest.approx(2.1)]
    assert r["rounds_min"] == pytest.approx(2.0) and r["rounds_max"] == pytest.approx(2.1)
    assert r["rounds_min"] <= r["rounds_q1"] <= r["rounds_q3"] <= r["rounds_max"]


def test_ratio_needs_paired_rounds():
    with pytest.raises(ValueError, match="same number"):
        ratio_stats([[1.0], [1.0]], [[1.0]])
    with pytest.raises(ValueError, match="same number"):
        ratio_stats([], [])


def test_round_orders_rotate():
    orders = round_orders(["a", "b", "c"], 4)
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    for order in orders:
        assert sorted(order) == ["a", "b", "c"]  # every variant once per round
