"""Conditional templates: piecewise functions of one to three ints."""

from __future__ import annotations

import random

from wmtp.data.synthetic.spec import INT_NAMES, Spec, code, family


def _clamp(rng: random.Random) -> Spec:
    lo, x = rng.randint(-10, 5), rng.choice(INT_NAMES)
    hi = lo + rng.randint(3, 20)
    return Spec(
        rng.choice(("clamp", "bound", "limit")), f"{x}: int", "int", f"Return {x} limited to the range [{lo}, {hi}].",
        (code(f"""
             if {x} < {lo}:
                 return {lo}
             if {x} > {hi}:
                 return {hi}
             return {x}
             """),
         f"return max({lo}, min({x}, {hi}))", f"return min(max({x}, {lo}), {hi})",
         code(f"""
             if {x} < {lo}:
                 return {lo}
             elif {x} > {hi}:
                 return {hi}
             else:
                 return {x}
             """)),
        [(hi + 5,), (lo,), (hi,), (lo - 1,), (hi + 1,), (lo + 1,), (lo - rng.randint(5, 30),)],
    )


def _sign(rng: random.Random) -> Spec:
    x = rng.choice(INT_NAMES)
    return Spec(
        rng.choice(("sign", "signum", "sign_of")), f"{x}: int", "int",
        f"Return 1 if {x} is positive, -1 if it is negative and 0 if it is zero.",
        (code(f"""
             if {x} > 0:
                 return 1
             if {x} < 0:
                 return -1
             return 0
             """),
         f"return ({x} > 0) - ({x} < 0)",
         code(f"""
             if {x} > 0:
                 return 1
             elif {x} < 0:
                 return -1
             else:
                 return 0
             """)),
        [(rng.randint(2, 50),), (0,), (1,), (-1,), (-rng.randint(2, 50),)],
    )


def _within(rng: random.Random) -> Spec:
    k, (a, b) = rng.randint(1, 9), rng.choice((("a", "b"), ("x", "y"), ("m", "n")))
    return Spec(
        rng.choice((f"within_{k}", "close_enough", "near")), f"{a}: int, {b}: int", "bool",
        f"Return True if {a} and {b} differ by at most {k}.",
        (f"return abs({a} - {b}) <= {k}", f"return -{k} <= {a} - {b} <= {k}",
         code(f"""
             if {a} > {b}:
                 return {a} - {b} <= {k}
             return {b} - {a} <= {k}
             """)),
        [(3, 3 + k), (k, 0), (0, k + 1), (k + 1, 0), (5, 5), (-k, 0), (2, 3 + k)],
    )


def _bucket(rng: random.Random) -> Spec:
    a, x = rng.randint(-5, 20), rng.choice(INT_NAMES)
    b = a + rng.randint(2, 15)
    low, mid, high = rng.choice((("low", "mid", "high"), ("cold", "warm", "hot"), ("small", "medium", "large")))
    return Spec(
        rng.choice(("bucket", "classify", "band")), f"{x}: int", "str",
        f"Return '{low}' if {x} < {a}, '{mid}' if {x} < {b}, otherwise '{high}'.",
        (code(f"""
             if {x} < {a}:
                 return '{low}'
             elif {x} < {b}:
                 return '{mid}'
             else:
                 return '{high}'
             """),
         code(f"""
             if {x} < {a}:
                 return '{low}'
             if {x} < {b}:
                 return '{mid}'
             return '{high}'
             """),
         code(f"""
             if {x} >= {b}:
                 return '{high}'
             if {x} >= {a}:
                 return '{mid}'
             return '{low}'
             """)),
        [(a + 1,), (a,), (b,), (a - 1,), (b - 1,), (a - 10,), (b + 10,)],
    )


def _fizz(rng: random.Random) -> Spec:
    a, b = rng.choice(((2, 3), (2, 5), (3, 4), (3, 5), (2, 7), (3, 7), (4, 5), (5, 7)))
    w1, w2 = rng.sample(("Fizz", "Buzz", "Bang", "Pop", "Zap", "Boom"), 2)
    n = rng.choice(INT_NAMES)
    return Spec(
        rng.choice(("fizz_buzz", "say", "fizz_like")), f"{n}: int", "str",
        f"Return '{w1}{w2}' if {n} is divisible by both {a} and {b}, '{w1}' if only by {a}, '{w2}' if only by {b}, "
        f"otherwise str({n}).",
        (code(f"""
             if {n} % {a} == 0 and {n} % {b} == 0:
                 return '{w1}{w2}'
             if {n} % {a} == 0:
                 return '{w1}'
             if {n} % {b} == 0:
                 return '{w2}'
             return str({n})
             """),
         code(f"""
             out = ''
             if {n} % {a} == 0:
                 out += '{w1}'
             if {n} % {b} == 0:
                 out += '{w2}'
             return out or str({n})
             """),
         code(f"""
             if {n} % {a * b} == 0:
                 return '{w1}{w2}'
             elif {n} % {a} == 0:
                 return '{w1}'
             elif {n} % {b} == 0:
                 return '{w2}'
             return str({n})
             """)),
        [(a * b,), (a,), (b,), (1,), (2 * a * b,), (a * b + 1,), (rng.randint(8, 99),)],
    )


def _leap(rng: random.Random) -> Spec:
    y = rng.choice(("year", "y"))
    return Spec(
        rng.choice(("is_leap", "leap_year", "is_leap_year")), f"{y}: int", "bool",
        f"Return True if {y} is a leap year in the Gregorian calendar.",
        (f"return {y} % 4 == 0 and ({y} % 100 != 0 or {y} % 400 == 0)",
         code(f"""
             if {y} % 400 == 0:
                 return True
             if {y} % 100 == 0:
                 return False
             return {y} % 4 == 0
             """),
         code(f"""
             if {y} % 4 != 0:
                 return False
             if {y} % 100 != 0:
                 return True
             return {y} % 400 == 0
             """)),
        [(2024,), (1900,), (2000,), (2023,), (2100,), (1996,), (2400,), (rng.randint(1601, 2399),)],
    )


def _triangle(rng: random.Random) -> Spec:
    a, b, c = rng.choice((("a", "b", "c"), ("x", "y", "z"), ("p", "q", "r")))
    return Spec(
        rng.choice(("triangle_kind", "classify_triangle", "triangle_type")), f"{a}: int, {b}: int, {c}: int", "str",
        f"Return 'equilateral' if {a}, {b} and {c} are all equal, 'isosceles' if exactly two are equal, "
        "otherwise 'scalene'.",
        (code(f"""
             if {a} == {b} == {c}:
                 return 'equilateral'
             if {a} == {b} or {b} == {c} or {a} == {c}:
                 return 'isosceles'
             return 'scalene'
             """),
         code(f"""
             distinct = len({{{a}, {b}, {c}}})
             if distinct == 1:
                 return 'equilateral'
             if distinct == 2:
                 return 'isosceles'
             return 'scalene'
             """),
         f"return ['equilateral', 'isosceles', 'scalene'][len(set(({a}, {b}, {c}))) - 1]"),
        [(3, 4, 4), (3, 3, 3), (3, 3, 4), (4, 3, 3), (3, 4, 3), (3, 4, 5), (rng.randint(5, 9), 2, 4)],
    )


TEMPLATES = family(
    "conditionals",
    (_clamp, "easy"), (_sign, "easy"), (_within, "easy"), (_bucket, "medium"), (_fizz, "hard"), (_leap, "hard"),
    (_triangle, "hard"),
)
