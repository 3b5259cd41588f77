"""Arithmetic templates: integer expressions, digits, divisibility and sums over a range (texts:
`arithmetic.yaml`)."""

from __future__ import annotations

import random
from pathlib import Path

from wmtp.data.synthetic.spec import INT_NAMES, Drawn, family
from wmtp.data.synthetic.templates.bodies import counted, totalled


def _add_k(rng: random.Random) -> Drawn:
    k, x = rng.randint(2, 19), rng.choice(INT_NAMES)
    return {"k": k, "x": x}, lambda: [(rng.randint(1, 30),), (0,), (-k,), (rng.randint(-60, -1),),
                                      (rng.randint(31, 99),)]


def _affine(rng: random.Random) -> Drawn:
    a, b, x = rng.randint(2, 9), rng.choice([i for i in range(-9, 10) if i]), rng.choice(INT_NAMES)
    op, c = ("+", b) if b > 0 else ("-", -b)
    return {"a": a, "x": x, "op": op, "c": c}, lambda: [(rng.randint(1, 9),), (0,), (-3,), (rng.randint(10, 40),),
                                                        (rng.randint(-40, -4),)]


def _divmod(rng: random.Random) -> Drawn:
    k, n = rng.randint(2, 9), rng.choice(INT_NAMES)
    return {"k": k, "n": n}, lambda: [(k * rng.randint(2, 9) + rng.randint(1, k - 1),), (0,), (k,), (k - 1,),
                                      (-rng.randint(1, 30),), (rng.randint(10, 99),)]


def _digit_sum(rng: random.Random) -> Drawn:
    n = rng.choice(INT_NAMES)
    loop, generator, _ = totalled("d", f"str(abs({n}))", "int(d)")
    return {"n": n, "loop": loop, "generator": generator}, lambda: [
        (rng.randint(100, 999),), (0,), (7,), (-rng.randint(10, 999),), (rng.randint(1000, 99999),)]


def _count_multiples(rng: random.Random) -> Drawn:
    k, n = rng.randint(2, 9), rng.choice(INT_NAMES)
    loop, generator, _ = counted("i", f"range(1, {n} + 1)", f"i % {k} == 0")
    return {"k": k, "n": n, "loop": loop, "generator": generator}, lambda: [
        (k * rng.randint(2, 6),), (0,), (k - 1,), (k,), (k * rng.randint(3, 8) + 1,), (1,)]


def _sum_powers(rng: random.Random) -> Drawn:
    p, n = rng.randint(1, 3), rng.choice(INT_NAMES)
    term = "i" if p == 1 else f"i ** {p}"
    loop, generator, _ = totalled("i", f"range(1, {n} + 1)", term)
    what = f"1 + 2 + ... + {n}" if p == 1 else f"the sum of i ** {p} for i from 1 to {n} inclusive"
    return {"variant": p, "n": n, "term": term, "what": what, "loop": loop, "generator": generator}, lambda: [
        (4,), (0,), (1,), (rng.randint(5, 12),), (-rng.randint(1, 5),)]


TEMPLATES = family(Path(__file__).with_suffix(".yaml"), _add_k, _affine, _divmod, _digit_sum, _count_multiples,
                   _sum_powers)
