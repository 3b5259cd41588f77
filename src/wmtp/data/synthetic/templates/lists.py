"""List templates: filtering, mapping, scanning and reordering lists of ints."""

from __future__ import annotations

import random

from wmtp.data.synthetic.spec import LIST_NAMES, Spec, code, family, rand_ints
from wmtp.data.synthetic.templates.bodies import collected, counted, totalled


def _sum_multiples(rng: random.Random) -> Spec:
    k, xs = rng.randint(2, 5), rng.choice(LIST_NAMES)
    name = rng.choice(("sum_even", "sum_evens") if k == 2 else (f"sum_multiples_of_{k}", f"sum_div_by_{k}"))
    which = f"the even elements of {xs}" if k == 2 else f"the elements of {xs} that are divisible by {k}"
    return Spec(
        name, f"{xs}: list[int]", "int", f"Return the sum of {which}.",
        totalled("x", xs, "x", f"x % {k} == 0"),
        [(rand_ints(rng, 4, 6),), ([],), ([k],), ([1],), ([k * i for i in range(1, 4)],), (rand_ints(rng, 6, 9),)],
    )


def _count_greater(rng: random.Random) -> Spec:
    k, xs = rng.randint(-3, 9), rng.choice(LIST_NAMES)
    above = f"count_above_{k}" if k >= 0 else f"count_above_minus_{-k}"
    return Spec(
        rng.choice((above, "count_greater", "how_many_above")), f"{xs}: list[int]", "int",
        f"Return how many elements of {xs} are greater than {k}.",
        counted("x", xs, f"x > {k}"),
        [(rand_ints(rng, 4, 6) + [k + 1],), ([],), ([k],), ([k - 1, k, k + 1],), (rand_ints(rng, 6, 9),)],
    )


def _scale(rng: random.Random) -> Spec:
    k, xs = rng.randint(2, 9), rng.choice(LIST_NAMES)
    return Spec(
        rng.choice((f"times_{k}", f"scale_by_{k}", f"multiply_all_by_{k}")), f"{xs}: list[int]", "list[int]",
        f"Return a new list with every element of {xs} multiplied by {k}.",
        (*collected("x", xs, f"x * {k}"), f"return list(map(lambda x: x * {k}, {xs}))"),
        [(rand_ints(rng, 3, 4),), ([],), ([0],), ([1, -1],), (rand_ints(rng, 5, 7),)],
    )


def _running_sum(rng: random.Random) -> Spec:
    xs = rng.choice(LIST_NAMES)
    return Spec(
        rng.choice(("running_sum", "prefix_sums", "cumulative_sum")), f"{xs}: list[int]", "list[int]",
        f"Return the list whose i-th element is the sum of {xs}[0] .. {xs}[i].",
        (code(f"""
             out = []
             total = 0
             for x in {xs}:
                 total += x
                 out.append(total)
             return out
             """),
         f"return [sum({xs}[:i + 1]) for i in range(len({xs}))]",
         code(f"""
             out = {xs}[:1]
             for x in {xs}[1:]:
                 out.append(out[-1] + x)
             return out
             """)),
        [(rand_ints(rng, 3, 4, 1, 9),), ([],), ([5],), ([2, -2, 3],), (rand_ints(rng, 5, 7),)],
    )


def _max_gap(rng: random.Random) -> Spec:
    xs = rng.choice(LIST_NAMES)
    return Spec(
        rng.choice(("max_gap", "largest_step", "max_jump")), f"{xs}: list[int]", "int",
        f"Return the largest absolute difference between neighbouring elements of {xs} (0 if it has fewer than two).",
        (code(f"""
             best = 0
             for i in range(1, len({xs})):
                 best = max(best, abs({xs}[i] - {xs}[i - 1]))
             return best
             """),
         f"return max((abs(b - a) for a, b in zip({xs}, {xs}[1:])), default=0)",
         code(f"""
             best = 0
             for a, b in zip({xs}, {xs}[1:]):
                 if abs(b - a) > best:
                     best = abs(b - a)
             return best
             """)),
        [(rand_ints(rng, 4, 5),), ([],), ([4],), ([9, 1, 2],), ([1, 2, 10],), (rand_ints(rng, 6, 8),)],
    )


def _index_of_extreme(rng: random.Random) -> Spec:
    largest, xs = rng.random() < 0.5, rng.choice(LIST_NAMES)
    which, cmp, fn = ("largest", ">", "max") if largest else ("smallest", "<", "min")
    values = rand_ints(rng, 4, 6)
    extreme = max(values) if largest else min(values)
    return Spec(
        rng.choice((f"index_of_{fn}", f"arg{fn}", f"position_of_{which}")), f"{xs}: list[int]", "int",
        f"Return the index of the first {which} element of {xs} (-1 if it is empty).",
        (code(f"""
             if not {xs}:
                 return -1
             best = 0
             for i in range(1, len({xs})):
                 if {xs}[i] {cmp} {xs}[best]:
                     best = i
             return best
             """),
         code(f"""
             if not {xs}:
                 return -1
             return {xs}.index({fn}({xs}))
             """),
         code(f"""
             best = -1
             for i, x in enumerate({xs}):
                 if best == -1 or x {cmp} {xs}[best]:
                     best = i
             return best
             """)),
        [(values,), ([],), ([7],), (values + [extreme],), ([extreme] + values,),
         ([0, 9, 2] if largest else [5, -3, 4],),  # the extreme at index 1 catches a loop starting at 2
         (rand_ints(rng, 6, 8),)],
    )


def _dedupe(rng: random.Random) -> Spec:
    xs = rng.choice(LIST_NAMES)
    return Spec(
        rng.choice(("dedupe", "unique_in_order", "remove_duplicates")), f"{xs}: list[int]", "list[int]",
        f"Return the elements of {xs} without repeats, keeping the order of first occurrence.",
        (code(f"""
             out = []
             for x in {xs}:
                 if x not in out:
                     out.append(x)
             return out
             """),
         f"return list(dict.fromkeys({xs}))", f"return [x for i, x in enumerate({xs}) if x not in {xs}[:i]]"),
        [(rand_ints(rng, 5, 7, 0, 4),), ([],), ([3, 3, 3],), ([1, 2, 1, 2],), (rand_ints(rng, 8, 10, 0, 6),)],
    )


def _rotate_left(rng: random.Random) -> Spec:
    k, xs = rng.randint(1, 4), rng.choice(LIST_NAMES)
    return Spec(
        rng.choice((f"rotate_left_{k}", f"shift_left_{k}", f"cycle_{k}")), f"{xs}: list[int]", "list[int]",
        f"Return {xs} rotated left by {k} positions, cyclically (the first element moves to the end {k} times).",
        (code(f"""
             if not {xs}:
                 return []
             j = {k} % len({xs})
             return {xs}[j:] + {xs}[:j]
             """),
         code(f"""
             out = list({xs})
             if out:
                 for _ in range({k}):
                     out.append(out.pop(0))
             return out
             """),
         code(f"""
             n = len({xs})
             return [{xs}[(i + {k}) % n] for i in range(n)]
             """)),
        [([1, 2, 3, 4, 5, 6],), ([],), ([7],), (list(range(1, k + 1)),), (list(range(1, k + 2)),),
         (rand_ints(rng, 5, 7),)],
    )


def _second_largest(rng: random.Random) -> Spec:
    xs = rng.choice(LIST_NAMES)
    return Spec(
        rng.choice(("second_largest", "runner_up", "second_max")), f"{xs}: list[int]", "int | None",
        f"Return the second largest distinct value in {xs}, or None if there is none.",
        (code(f"""
             distinct = sorted(set({xs}))
             if len(distinct) < 2:
                 return None
             return distinct[-2]
             """),
         code(f"""
             best = None
             second = None
             for x in sorted(set({xs})):
                 second = best
                 best = x
             return second
             """),
         code(f"""
             top = max({xs}, default=None)
             rest = [x for x in {xs} if x != top]
             return max(rest, default=None)
             """)),
        [(rand_ints(rng, 4, 6),), ([],), ([4],), ([5, 5],), ([1, 3, 3, 2],), ([-4, -1, -7],), (rand_ints(rng, 6, 8),)],
    )


TEMPLATES = family(
    "lists",
    (_sum_multiples, "easy"), (_count_greater, "easy"), (_scale, "easy"), (_running_sum, "medium"),
    (_max_gap, "medium"), (_index_of_extreme, "medium"), (_dedupe, "medium"), (_rotate_left, "hard"),
    (_second_largest, "hard"),
)
