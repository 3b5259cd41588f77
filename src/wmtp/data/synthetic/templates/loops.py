"""Loop templates: products, recurrences, nested counts and sequences built over a range (texts: `loops.yaml`)."""

from __future__ import annotations

import random
from pathlib import Path

from wmtp.data.synthetic.spec import INT_NAMES, LIST_NAMES, Drawn, family, rand_ints
from wmtp.data.synthetic.templates.bodies import collected, counted


def _factorial(rng: random.Random) -> Drawn:
    return {"n": rng.choice(INT_NAMES)}, lambda: [(5,), (0,), (1,), (2,), (rng.randint(6, 12),), (-rng.randint(1, 4),)]


def _fib_like(rng: random.Random) -> Drawn:
    a0, a1, n = rng.randint(0, 4), rng.randint(1, 5), rng.choice(("n", "k", "i"))
    return {"a0": a0, "a1": a1, "n": n}, lambda: [(5,), (0,), (1,), (2,), (rng.randint(6, 15),)]


def _count_div_either(rng: random.Random) -> Drawn:
    a, b = sorted(rng.sample(range(2, 8), 2))
    n = rng.choice(INT_NAMES)
    loop, generator, listed = counted("i", f"range(1, {n} + 1)", f"i % {a} == 0 or i % {b} == 0")
    return {"a": a, "b": b, "n": n, "loop": loop, "generator": generator, "listed": listed}, lambda: [
        (a * b,), (0,), (1,), (a,), (b,), (rng.randint(10, 60),)]


def _count_pairs(rng: random.Random) -> Drawn:
    t, xs = rng.randint(2, 12), rng.choice(LIST_NAMES)
    return {"t": t, "xs": xs}, lambda: [
        (rand_ints(rng, 4, 6, 0, t),), ([],), ([t],), ([t // 2, t - t // 2],), ([t // 2] * 3 + [t - t // 2],),
        (rand_ints(rng, 7, 9, 0, t),)]


def _join_range(rng: random.Random) -> Drawn:
    sep, n = rng.choice((",", "-", " ", ", ", "+", "|")), rng.choice(INT_NAMES)
    return {"sep": sep, "n": n}, lambda: [(3,), (0,), (1,), (rng.randint(4, 12),)]


def _alternating_sum(rng: random.Random) -> Drawn:
    return {"xs": rng.choice(LIST_NAMES)}, lambda: [
        (rand_ints(rng, 4, 5, 1, 9),), ([],), ([6],), ([2, 5],), (rand_ints(rng, 6, 8),)]


def _multiples(rng: random.Random) -> Drawn:
    k, n = rng.randint(2, 9), rng.choice(("n", "count", "m"))
    loop, comprehension = collected("i", f"range(1, {n} + 1)", f"{k} * i")
    return {"k": k, "n": n, "loop": loop, "comprehension": comprehension}, lambda: [
        (4,), (0,), (1,), (rng.randint(5, 10),)]


TEMPLATES = family(Path(__file__).with_suffix(".yaml"), _factorial, _fib_like, _count_div_either, _count_pairs,
                   _join_range, _alternating_sum, _multiples)
