"""Conditional templates: piecewise functions of one to three ints (texts: `conditionals.yaml`)."""

from __future__ import annotations

import random
from pathlib import Path

from wmtp.data.synthetic.spec import INT_NAMES, Drawn, family


def _clamp(rng: random.Random) -> Drawn:
    lo, x = rng.randint(-10, 5), rng.choice(INT_NAMES)
    hi = lo + rng.randint(3, 20)
    return {"lo": lo, "x": x, "hi": hi}, lambda: [
        (hi + 5,), (lo,), (hi,), (lo - 1,), (hi + 1,), (lo + 1,), (lo - rng.randint(5, 30),)]


def _sign(rng: random.Random) -> Drawn:
    return {"x": rng.choice(INT_NAMES)}, lambda: [(rng.randint(2, 50),), (0,), (1,), (-1,), (-rng.randint(2, 50),)]


def _within(rng: random.Random) -> Drawn:
    k, (a, b) = rng.randint(1, 9), rng.choice((("a", "b"), ("x", "y"), ("m", "n")))
    return {"k": k, "a": a, "b": b}, lambda: [(3, 3 + k), (k, 0), (0, k + 1), (k + 1, 0), (5, 5), (-k, 0), (2, 3 + k)]


def _bucket(rng: random.Random) -> Drawn:
    a, x = rng.randint(-5, 20), rng.choice(INT_NAMES)
    b = a + rng.randint(2, 15)
    low, mid, high = rng.choice((("low", "mid", "high"), ("cold", "warm", "hot"), ("small", "medium", "large")))
    return {"a": a, "x": x, "b": b, "low": low, "mid": mid, "high": high}, lambda: [
        (a + 1,), (a,), (b,), (a - 1,), (b - 1,), (a - 10,), (b + 10,)]


def _fizz(rng: random.Random) -> Drawn:
    a, b = rng.choice(((2, 3), (2, 5), (3, 4), (3, 5), (2, 7), (3, 7), (4, 5), (5, 7)))
    w1, w2 = rng.sample(("Fizz", "Buzz", "Bang", "Pop", "Zap", "Boom"), 2)
    return {"a": a, "b": b, "ab": a * b, "w1": w1, "w2": w2, "n": rng.choice(INT_NAMES)}, lambda: [
        (a * b,), (a,), (b,), (1,), (2 * a * b,), (a * b + 1,), (rng.randint(8, 99),)]


def _leap(rng: random.Random) -> Drawn:
    return {"y": rng.choice(("year", "y"))}, lambda: [
        (2024,), (1900,), (2000,), (2023,), (2100,), (1996,), (2400,), (rng.randint(1601, 2399),)]


def _triangle(rng: random.Random) -> Drawn:
    a, b, c = rng.choice((("a", "b", "c"), ("x", "y", "z"), ("p", "q", "r")))
    return {"a": a, "b": b, "c": c}, lambda: [
        (3, 4, 4), (3, 3, 3), (3, 3, 4), (4, 3, 3), (3, 4, 3), (3, 4, 5), (rng.randint(5, 9), 2, 4)]


TEMPLATES = family(Path(__file__).with_suffix(".yaml"), _clamp, _sign, _within, _bucket, _fizz, _leap, _triangle)
