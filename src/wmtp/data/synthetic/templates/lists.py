"""List templates: filtering, mapping, scanning and reordering lists of ints (texts: `lists.yaml`)."""

from __future__ import annotations

import random
from pathlib import Path

from wmtp.data.synthetic.spec import LIST_NAMES, Drawn, family, rand_ints
from wmtp.data.synthetic.templates.bodies import collected, counted, totalled


def _sum_multiples(rng: random.Random) -> Drawn:
    k, xs = rng.randint(2, 5), rng.choice(LIST_NAMES)
    loop, generator, listed = totalled("x", xs, "x", f"x % {k} == 0")
    values = {"variant": "even" if k == 2 else "multiple", "k": k, "xs": xs, "loop": loop, "generator": generator,
              "listed": listed}
    return values, lambda: [(rand_ints(rng, 4, 6),), ([],), ([k],), ([1],), ([k * i for i in range(1, 4)],),
                            (rand_ints(rng, 6, 9),)]


def _count_greater(rng: random.Random) -> Drawn:
    k, xs = rng.randint(-3, 9), rng.choice(LIST_NAMES)
    loop, generator, listed = counted("x", xs, f"x > {k}")
    above = f"count_above_{k}" if k >= 0 else f"count_above_minus_{-k}"
    values = {"k": k, "xs": xs, "above": above, "loop": loop, "generator": generator, "listed": listed}
    return values, lambda: [(rand_ints(rng, 4, 6) + [k + 1],), ([],), ([k],), ([k - 1, k, k + 1],),
                            (rand_ints(rng, 6, 9),)]


def _scale(rng: random.Random) -> Drawn:
    k, xs = rng.randint(2, 9), rng.choice(LIST_NAMES)
    loop, comprehension = collected("x", xs, f"x * {k}")
    return {"k": k, "xs": xs, "loop": loop, "comprehension": comprehension}, lambda: [
        (rand_ints(rng, 3, 4),), ([],), ([0],), ([1, -1],), (rand_ints(rng, 5, 7),)]


def _running_sum(rng: random.Random) -> Drawn:
    return {"xs": rng.choice(LIST_NAMES)}, lambda: [
        (rand_ints(rng, 3, 4, 1, 9),), ([],), ([5],), ([2, -2, 3],), (rand_ints(rng, 5, 7),)]


def _max_gap(rng: random.Random) -> Drawn:
    return {"xs": rng.choice(LIST_NAMES)}, lambda: [
        (rand_ints(rng, 4, 5),), ([],), ([4],), ([9, 1, 2],), ([1, 2, 10],), (rand_ints(rng, 6, 8),)]


def _index_of_extreme(rng: random.Random) -> Drawn:
    largest, xs = rng.random() < 0.5, rng.choice(LIST_NAMES)
    which, cmp, fn = ("largest", ">", "max") if largest else ("smallest", "<", "min")
    values = rand_ints(rng, 4, 6)
    extreme = max(values) if largest else min(values)
    return {"xs": xs, "which": which, "cmp": cmp, "fn": fn}, lambda: [
        (values,), ([],), ([7],), (values + [extreme],), ([extreme] + values,),
        ([0, 9, 2] if largest else [5, -3, 4],),  # the extreme at index 1 catches a loop starting at 2
        (rand_ints(rng, 6, 8),)]


def _dedupe(rng: random.Random) -> Drawn:
    return {"xs": rng.choice(LIST_NAMES)}, lambda: [
        (rand_ints(rng, 5, 7, 0, 4),), ([],), ([3, 3, 3],), ([1, 2, 1, 2],), (rand_ints(rng, 8, 10, 0, 6),)]


def _rotate_left(rng: random.Random) -> Drawn:
    k, xs = rng.randint(1, 4), rng.choice(LIST_NAMES)
    return {"k": k, "xs": xs}, lambda: [
        ([1, 2, 3, 4, 5, 6],), ([],), ([7],), (list(range(1, k + 1)),), (list(range(1, k + 2)),),
        (rand_ints(rng, 5, 7),)]


def _second_largest(rng: random.Random) -> Drawn:
    return {"xs": rng.choice(LIST_NAMES)}, lambda: [
        (rand_ints(rng, 4, 6),), ([],), ([4],), ([5, 5],), ([1, 3, 3, 2],), ([-4, -1, -7],), (rand_ints(rng, 6, 8),)]


TEMPLATES = family(Path(__file__).with_suffix(".yaml"), _sum_multiples, _count_greater, _scale, _running_sum,
                   _max_gap, _index_of_extreme, _dedupe, _rotate_left, _second_largest)
