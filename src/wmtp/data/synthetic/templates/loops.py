"""Loop templates: products, recurrences, nested counts and sequences built over a range."""

from __future__ import annotations

import random

from wmtp.data.synthetic.spec import (
    INT_NAMES,
    LIST_NAMES,
    Spec,
    code,
    family,
    rand_ints,
)
from wmtp.data.synthetic.templates.bodies import collected, counted


def _factorial(rng: random.Random) -> Spec:
    n = rng.choice(INT_NAMES)
    return Spec(
        rng.choice(("factorial", "fact", "product_up_to")), f"{n}: int", "int",
        f"Return the product of the integers from 1 to {n} (1 when {n} < 1).",
        (code(f"""
             result = 1
             for i in range(2, {n} + 1):
                 result *= i
             return result
             """),
         code(f"""
             result = 1
             for i in range(1, {n} + 1):
                 result = result * i
             return result
             """),
         code(f"""
             result = 1
             for i in range({n}, 1, -1):
                 result *= i
             return result
             """)),
        [(5,), (0,), (1,), (2,), (rng.randint(6, 12),), (-rng.randint(1, 4),)],
    )


def _fib_like(rng: random.Random) -> Spec:
    a0, a1, n = rng.randint(0, 4), rng.randint(1, 5), rng.choice(("n", "k", "i"))
    return Spec(
        rng.choice(("fib_like", "sequence_term", f"fib_{a0}_{a1}")), f"{n}: int", "int",
        f"Return term {n} (counting from 0) of the sequence that starts {a0}, {a1} and continues with the sum of "
        "the previous two terms.",
        (code(f"""
             a, b = {a0}, {a1}
             for _ in range({n}):
                 a, b = b, a + b
             return a
             """),
         code(f"""
             terms = [{a0}, {a1}]
             for j in range(2, {n} + 1):
                 terms.append(terms[j - 1] + terms[j - 2])
             return terms[{n}]
             """),
         code(f"""
             a = {a0}
             b = {a1}
             for _ in range({n}):
                 c = a + b
                 a = b
                 b = c
             return a
             """)),
        [(5,), (0,), (1,), (2,), (rng.randint(6, 15),)],
    )


def _count_div_either(rng: random.Random) -> Spec:
    a, b = sorted(rng.sample(range(2, 8), 2))
    n = rng.choice(INT_NAMES)
    return Spec(
        rng.choice((f"count_div_{a}_or_{b}", "count_either", "multiples_of_either")), f"{n}: int", "int",
        f"Return how many integers from 1 to {n} inclusive are divisible by {a} or by {b}.",
        counted("i", f"range(1, {n} + 1)", f"i % {a} == 0 or i % {b} == 0"),
        [(a * b,), (0,), (1,), (a,), (b,), (rng.randint(10, 60),)],
    )


def _count_pairs(rng: random.Random) -> Spec:
    t, xs = rng.randint(2, 12), rng.choice(LIST_NAMES)
    return Spec(
        rng.choice(("count_pairs", f"pairs_summing_to_{t}", "two_sum_count")), f"{xs}: list[int]", "int",
        f"Return the number of index pairs i < j such that {xs}[i] + {xs}[j] == {t}.",
        (code(f"""
             count = 0
             for i in range(len({xs})):
                 for j in range(i + 1, len({xs})):
                     if {xs}[i] + {xs}[j] == {t}:
                         count += 1
             return count
             """),
         code(f"""
             n = len({xs})
             return sum(1 for i in range(n) for j in range(i + 1, n) if {xs}[i] + {xs}[j] == {t})
             """),
         code(f"""
             count = 0
             for i, x in enumerate({xs}):
                 for y in {xs}[i + 1:]:
                     if x + y == {t}:
                         count += 1
             return count
             """)),
        [(rand_ints(rng, 4, 6, 0, t),), ([],), ([t],), ([t // 2, t - t // 2],), ([t // 2] * 3 + [t - t // 2],),
         (rand_ints(rng, 7, 9, 0, t),)],
    )


def _join_range(rng: random.Random) -> Spec:
    sep, n = rng.choice((",", "-", " ", ", ", "+", "|")), rng.choice(INT_NAMES)
    return Spec(
        rng.choice(("count_up", "join_numbers", "number_line")), f"{n}: int", "str",
        f"Return the numbers from 1 to {n} joined by '{sep}'.",
        (code(f"""
             parts = []
             for i in range(1, {n} + 1):
                 parts.append(str(i))
             return '{sep}'.join(parts)
             """),
         f"return '{sep}'.join(str(i) for i in range(1, {n} + 1))",
         f"return '{sep}'.join(map(str, range(1, {n} + 1)))"),
        [(3,), (0,), (1,), (rng.randint(4, 12),)],
    )


def _alternating_sum(rng: random.Random) -> Spec:
    xs = rng.choice(LIST_NAMES)
    return Spec(
        rng.choice(("alternating_sum", "alt_sum", "plus_minus_sum")), f"{xs}: list[int]", "int",
        f"Return {xs}[0] - {xs}[1] + {xs}[2] - ... (0 for an empty list).",
        (code(f"""
             total = 0
             for i, x in enumerate({xs}):
                 if i % 2 == 0:
                     total += x
                 else:
                     total -= x
             return total
             """),
         f"return sum({xs}[::2]) - sum({xs}[1::2])",
         f"return sum(x if i % 2 == 0 else -x for i, x in enumerate({xs}))"),
        [(rand_ints(rng, 4, 5, 1, 9),), ([],), ([6],), ([2, 5],), (rand_ints(rng, 6, 8),)],
    )


def _multiples(rng: random.Random) -> Spec:
    k, n = rng.randint(2, 9), rng.choice(("n", "count", "m"))
    return Spec(
        rng.choice((f"multiples_of_{k}", f"first_multiples_{k}", f"table_of_{k}")), f"{n}: int", "list[int]",
        f"Return the first {n} positive multiples of {k}, in increasing order.",
        (*collected("i", f"range(1, {n} + 1)", f"{k} * i"), f"return list(range({k}, {k} * {n} + 1, {k}))"),
        [(4,), (0,), (1,), (rng.randint(5, 10),)],
    )


TEMPLATES = family(
    "loops",
    (_factorial, "medium"), (_fib_like, "medium"), (_count_div_either, "medium"), (_count_pairs, "hard"),
    (_join_range, "easy"), (_alternating_sum, "medium"), (_multiples, "easy"),
)
