"""Robust statistics of benchmark times on a shared machine: summaries of raw step times, ratios between
variants timed in interleaved rounds, and the rotated order of those rounds.

A step time on cores shared with other processes has a floor (the undisturbed time) and a long upper tail
(time slices lost to them). So a variant's time is the median of its raw times (an outlier moves it by one rank
at most) and its floor estimate the minimum; a ratio is the ratio of medians (and, as a check, of minima). Its
spread comes from the per-round ratios: within one round the two variants ran next to each other, under nearly
the same load, so round r's ratio median(num[r]) / median(den[r]) is one paired observation of the ratio.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def summarize(times: Sequence[float]) -> dict[str, float]:
    """median, min, max, quartiles q1/q3 (inclusive method) and iqr = q3 − q1 of raw times, with their count n."""
    if not times:
        raise ValueError("no times to summarize")
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else (times[0],) * 3
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "q1": q1, "q3": q3,
            "iqr": q3 - q1, "n": len(times)}  # fmt: skip


def ratio_stats(numerator: Sequence[Sequence[float]], denominator: Sequence[Sequence[float]]) -> dict[str, Any]:
    """The ratio numerator / denominator of two variants' times, given as rounds[r] = the raw times of round r.

    ratio: median over all of numerator's times / median over all of denominator's; ratio_min: min / min;
    rounds: the per-round ratios median(num[r]) / median(den[r]), summarised in rounds_min, rounds_q1,
    rounds_q3, rounds_max (the spread).
    """
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError(f"need the same number (≥ 1) of rounds, got {len(numerator)} and {len(denominator)}")
    num, den = _flat(numerator), _flat(denominator)
    rounds = [statistics.median(n) / statistics.median(d) for n, d in zip(numerator, denominator)]
    spread = summarize(rounds)
    return {
        "ratio": statistics.median(num) / statistics.median(den),
        "ratio_min": min(num) / min(den),
        "rounds": rounds,
        **{f"rounds_{k}": spread[k] for k in ("min", "q1", "q3", "max")},
    }


def round_orders(variants: Sequence[str], rounds: int) -> list[list[str]]:
    """The run order of each round: round r starts at variant r mod n and wraps around, so every variant leads
    (and trails) equally often and a drift in load within a round does not always hit the same one."""
    n = len(variants)
    return [[variants[(r + i) % n] for i in range(n)] for r in range(rounds)]


def _flat(rounds: Sequence[Sequence[float]]) -> list[float]:
    flat = [t for r in rounds for t in r]
    if not flat:
        raise ValueError("no times in any round")
    return flat
