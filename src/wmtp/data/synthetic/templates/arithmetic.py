"""Arithmetic templates: integer expressions, digits, divisibility and sums over a range."""

from __future__ import annotations

import random

from wmtp.data.synthetic.spec import INT_NAMES, Spec, code, family
from wmtp.data.synthetic.templates.bodies import counted, totalled


def _add_k(rng: random.Random) -> Spec:
    k, x = rng.randint(2, 19), rng.choice(INT_NAMES)
    return Spec(
        rng.choice((f"add_{k}", f"plus_{k}", f"increase_by_{k}")), f"{x}: int", "int", f"Return {x} plus {k}.",
        (f"return {x} + {k}",
         code(f"""
             result = {x} + {k}
             return result
             """),
         f"return {k} + {x}"),
        [(rng.randint(1, 30),), (0,), (-k,), (rng.randint(-60, -1),), (rng.randint(31, 99),)],
    )


def _affine(rng: random.Random) -> Spec:
    a, b, x = rng.randint(2, 9), rng.choice([i for i in range(-9, 10) if i]), rng.choice(INT_NAMES)
    op, c = ("+", b) if b > 0 else ("-", -b)
    return Spec(
        rng.choice(("affine", "scale_shift", "linear")), f"{x}: int", "int", f"Return {a} * {x} {op} {c}.",
        (f"return {a} * {x} {op} {c}", f"return {x} * {a} {op} {c}", code(f"""
                                                                         y = {x} * {a}
                                                                         y {op}= {c}
                                                                         return y
                                                                         """)),
        [(rng.randint(1, 9),), (0,), (-3,), (rng.randint(10, 40),), (rng.randint(-40, -4),)],
    )


def _divmod(rng: random.Random) -> Spec:
    k, n = rng.randint(2, 9), rng.choice(INT_NAMES)
    return Spec(
        rng.choice((f"divmod_{k}", f"split_by_{k}", f"quot_rem_{k}")), f"{n}: int", "tuple[int, int]",
        f"Return the quotient and remainder of {n} divided by {k}, as a tuple.",
        (f"return ({n} // {k}, {n} % {k})", f"return divmod({n}, {k})",
         code(f"""
             q = {n} // {k}
             r = {n} - q * {k}
             return (q, r)
             """)),
        [(k * rng.randint(2, 9) + rng.randint(1, k - 1),), (0,), (k,), (k - 1,), (-rng.randint(1, 30),),
         (rng.randint(10, 99),)],
    )


def _digit_sum(rng: random.Random) -> Spec:
    n = rng.choice(INT_NAMES)
    loop, gen, _ = totalled("d", f"str(abs({n}))", "int(d)")
    return Spec(
        rng.choice(("digit_sum", "sum_of_digits", "digits_total")), f"{n}: int", "int",
        f"Return the sum of the decimal digits of {n}, ignoring its sign.",
        (gen, loop, f"return sum(map(int, str(abs({n}))))"),
        [(rng.randint(100, 999),), (0,), (7,), (-rng.randint(10, 999),), (rng.randint(1000, 99999),)],
    )


def _count_multiples(rng: random.Random) -> Spec:
    k, n = rng.randint(2, 9), rng.choice(INT_NAMES)
    return Spec(
        rng.choice((f"count_multiples_of_{k}", f"multiples_of_{k}_up_to", f"how_many_div_by_{k}")), f"{n}: int",
        "int", f"Return how many integers from 1 to {n} inclusive are divisible by {k}.",
        (*counted("i", f"range(1, {n} + 1)", f"i % {k} == 0")[:2], f"return len(range({k}, {n} + 1, {k}))"),
        [(k * rng.randint(2, 6),), (0,), (k - 1,), (k,), (k * rng.randint(3, 8) + 1,), (1,)],
    )


def _sum_powers(rng: random.Random) -> Spec:
    p, n = rng.randint(1, 3), rng.choice(INT_NAMES)
    term = "i" if p == 1 else f"i ** {p}"
    names = {1: ("sum_to", "triangle_number"), 2: ("sum_of_squares", "square_sum"), 3: ("sum_of_cubes", "cube_sum")}
    what = f"1 + 2 + ... + {n}" if p == 1 else f"the sum of i ** {p} for i from 1 to {n} inclusive"
    return Spec(
        rng.choice(names[p]), f"{n}: int", "int", f"Return {what} (0 when {n} < 1).",
        (*totalled("i", f"range(1, {n} + 1)", term)[:2], f"return sum([{term} for i in range({n} + 1)])"),
        [(4,), (0,), (1,), (rng.randint(5, 12),), (-rng.randint(1, 5),)],
    )


TEMPLATES = family(
    "arithmetic",
    (_add_k, "easy"), (_affine, "easy"), (_divmod, "medium"), (_digit_sum, "medium"), (_count_multiples, "medium"),
    (_sum_powers, "medium"),
)
