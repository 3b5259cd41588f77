"""The embedded verifiable code task: small Python function problems with correct and mutated solutions.

A problem comes from a template (35 of them, in 5 families) with random constants and names: a prompt (the
signature and a docstring with one `>>>` example), hidden tests (asserts whose expected values come from running
the template's canonical solution in-process, which is our own trusted code), stylistic variants of a correct
body (loop / comprehension / builtin), and mutants of those bodies (off-by-one, wrong operator, missing case,
wrong initial value, wrong return value). Mutants are minimal text edits, so they keep the formatting of the code
they came from: style never tells a correct solution from an incorrect one. Labels are never assumed: every
completion is run against the tests in the sandbox (`wmtp.eval.sandbox.run_many`, the same isolation as
evaluation), so a mutant that happens to pass is labelled correct.

Everything is deterministic by `SyntheticDataConfig.seed`: problem i uses RNGs seeded by (seed, i), so a config
with fewer problems yields a prefix of the same problems.
"""

from __future__ import annotations

import ast
import copy
import os
import random
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wmtp.config import SyntheticDataConfig
from wmtp.data.records import Record
from wmtp.eval.sandbox import run_many

# Bump when templates or mutations change: the data cache key includes it, so stale data is never reused.
GENERATOR_VERSION = 1

FAMILIES = ("arithmetic", "strings", "lists", "conditionals", "loops")

# Generous: the programs are tiny, and a correct solution timing out on a loaded machine would change a label.
_LABEL_TIMEOUT_S = 10.0
_LABEL_MEMORY_MB = 512
# A sandboxed run mostly waits (namespace setup and teardown), so several per core keep the cores busy:
# 4 per core labels about twice as fast as 1 per core on 2 cores. Safe here, unlike in evaluation, because
# these programs are our own and run in milliseconds, far from the timeout however busy the cores are.
_LABEL_WORKERS = 4 * (os.cpu_count() or 1)
_MAX_ATTEMPTS = 200  # resamples of a template before a family is declared exhausted


@dataclass(frozen=True)
class Problem:
    """One generated problem. `correct` / `incorrect` are completions (indented bodies ending in a newline) as
    written: correct variants and mutants. Their labels are decided later by running the tests."""

    problem_id: str
    family: str
    difficulty: str
    prompt: str
    entry_point: str
    tests: list[str]
    correct: list[str]
    incorrect: list[str]


@dataclass(frozen=True)
class _Spec:
    """What a template instance says: the function, its correct bodies (unindented; the first is canonical) and
    the argument tuples the tests call it with (the first is the docstring example)."""

    name: str
    params: str
    returns: str
    doc: str
    bodies: tuple[str, ...]
    inputs: list[tuple[Any, ...]]


@dataclass(frozen=True)
class _Template:
    name: str
    family: str
    difficulty: str
    build: Callable[[random.Random], _Spec]


# --------------------------------------------------------------------------------------------------- templates
INT_NAMES = ("n", "x", "value", "num")
LIST_NAMES = ("xs", "nums", "values", "items")
STR_NAMES = ("s", "text", "word")
LETTERS = "abcdefghijklmnopqrstuvwxyz"
WORDS = ("apple", "bird", "code", "data", "echo", "fish", "gate", "hill", "iron", "jazz", "kite", "lamp", "moon",
         "nest", "oak", "pear", "quiz", "rain", "sun", "tree")


def _ints(rng: random.Random, lo_len: int, hi_len: int, lo: int = -9, hi: int = 9) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(lo_len, hi_len))]


def _string(rng: random.Random, alphabet: str, lo_len: int, hi_len: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo_len, hi_len)))


def _sentence(rng: random.Random, lo_words: int, hi_words: int, sep: str = " ") -> str:
    return sep.join(rng.choice(WORDS) for _ in range(rng.randint(lo_words, hi_words)))


def _add_k(rng: random.Random) -> _Spec:
    k, x = rng.randint(2, 19), rng.choice(INT_NAMES)
    return _Spec(
        rng.choice((f"add_{k}", f"plus_{k}", f"increase_by_{k}")), f"{x}: int", "int", f"Return {x} plus {k}.",
        (f"return {x} + {k}", f"result = {x} + {k}\nreturn result", f"return {k} + {x}"),
        [(rng.randint(1, 30),), (0,), (-k,), (rng.randint(-60, -1),), (rng.randint(31, 99),)],
    )


def _affine(rng: random.Random) -> _Spec:
    a, b, x = rng.randint(2, 9), rng.choice([i for i in range(-9, 10) if i]), rng.choice(INT_NAMES)
    op, c = ("+", b) if b > 0 else ("-", -b)
    return _Spec(
        rng.choice(("affine", "scale_shift", "linear")), f"{x}: int", "int", f"Return {a} * {x} {op} {c}.",
        (f"return {a} * {x} {op} {c}", f"return {x} * {a} {op} {c}", f"y = {x} * {a}\ny {op}= {c}\nreturn y"),
        [(rng.randint(1, 9),), (0,), (-3,), (rng.randint(10, 40),), (rng.randint(-40, -4),)],
    )


def _divmod(rng: random.Random) -> _Spec:
    k, n = rng.randint(2, 9), rng.choice(INT_NAMES)
    return _Spec(
        rng.choice((f"divmod_{k}", f"split_by_{k}", f"quot_rem_{k}")), f"{n}: int", "tuple[int, int]",
        f"Return the quotient and remainder of {n} divided by {k}, as a tuple.",
        (f"return ({n} // {k}, {n} % {k})", f"return divmod({n}, {k})",
         f"q = {n} // {k}\nr = {n} - q * {k}\nreturn (q, r)"),
        [(k * rng.randint(2, 9) + rng.randint(1, k - 1),), (0,), (k,), (k - 1,), (-rng.randint(1, 30),),
         (rng.randint(10, 99),)],
    )


def _digit_sum(rng: random.Random) -> _Spec:
    n = rng.choice(INT_NAMES)
    return _Spec(
        rng.choice(("digit_sum", "sum_of_digits", "digits_total")), f"{n}: int", "int",
        f"Return the sum of the decimal digits of {n}, ignoring its sign.",
        (f"return sum(int(d) for d in str(abs({n})))",
         f"total = 0\nfor d in str(abs({n})):\n    total += int(d)\nreturn total",
         f"return sum(map(int, str(abs({n}))))"),
        [(rng.randint(100, 999),), (0,), (7,), (-rng.randint(10, 999),), (rng.randint(1000, 99999),)],
    )


def _count_multiples(rng: random.Random) -> _Spec:
    k, n = rng.randint(2, 9), rng.choice(INT_NAMES)
    return _Spec(
        rng.choice((f"count_multiples_of_{k}", f"multiples_of_{k}_up_to", f"how_many_div_by_{k}")), f"{n}: int",
        "int", f"Return how many integers from 1 to {n} inclusive are divisible by {k}.",
        (f"count = 0\nfor i in range(1, {n} + 1):\n    if i % {k} == 0:\n        count += 1\nreturn count",
         f"return sum(1 for i in range(1, {n} + 1) if i % {k} == 0)", f"return len(range({k}, {n} + 1, {k}))"),
        [(k * rng.randint(2, 6),), (0,), (k - 1,), (k,), (k * rng.randint(3, 8) + 1,), (1,)],
    )


def _sum_powers(rng: random.Random) -> _Spec:
    p, n = rng.randint(1, 3), rng.choice(INT_NAMES)
    term = "i" if p == 1 else f"i ** {p}"
    names = {1: ("sum_to", "triangle_number"), 2: ("sum_of_squares", "square_sum"), 3: ("sum_of_cubes", "cube_sum")}
    what = f"1 + 2 + ... + {n}" if p == 1 else f"the sum of i ** {p} for i from 1 to {n} inclusive"
    return _Spec(
        rng.choice(names[p]), f"{n}: int", "int", f"Return {what} (0 when {n} < 1).",
        (f"total = 0\nfor i in range(1, {n} + 1):\n    total += {term}\nreturn total",
         f"return sum({term} for i in range(1, {n} + 1))", f"return sum([{term} for i in range({n} + 1)])"),
        [(4,), (0,), (1,), (rng.randint(5, 12),), (-rng.randint(1, 5),)],
    )


def _count_char(rng: random.Random) -> _Spec:
    c, s = rng.choice("aeioulnrst"), rng.choice(STR_NAMES)
    alphabet = c * 3 + "".join(rng.sample(LETTERS, 3))
    return _Spec(
        rng.choice((f"count_{c}", f"count_{c}s", f"num_{c}")), f"{s}: str", "int",
        f"Return how many times '{c}' occurs in {s}.",
        (f"count = 0\nfor ch in {s}:\n    if ch == '{c}':\n        count += 1\nreturn count",
         f"return {s}.count('{c}')", f"return sum(1 for ch in {s} if ch == '{c}')",
         f"return len([ch for ch in {s} if ch == '{c}'])"),
        [(_string(rng, alphabet, 2, 4) + c + _string(rng, alphabet, 2, 4),), ("",), (c * 3,),
         (_string(rng, alphabet, 8, 14),), ("xyz",)],
    )


def _repeat_chars(rng: random.Random) -> _Spec:
    k, s = rng.randint(2, 4), rng.choice(STR_NAMES)
    return _Spec(
        rng.choice((f"stutter_{k}", f"repeat_each_{k}", f"echo_chars_{k}")), f"{s}: str", "str",
        f"Return {s} with every character repeated {k} times.",
        (f"out = ''\nfor ch in {s}:\n    out += ch * {k}\nreturn out", f"return ''.join(ch * {k} for ch in {s})",
         f"return ''.join([ch * {k} for ch in {s}])"),
        [(_string(rng, LETTERS, 2, 4),), ("",), ("x",), ("a b",), (_string(rng, LETTERS, 3, 6),)],
    )


def _reverse_fields(rng: random.Random) -> _Spec:
    sep, s = rng.choice((" ", ",", "-", ";", "/")), rng.choice(("s", "text", "line"))
    if sep == " ":
        name, doc = "reverse_words", f"Return the words of {s} (separated by single spaces) in reverse order."
    else:
        name = rng.choice(("reverse_fields", "flip_fields"))
        doc = f"Return the '{sep}'-separated fields of {s} in reverse order, joined by '{sep}'."
    return _Spec(
        name, f"{s}: str", "str", doc,
        (f"return '{sep}'.join({s}.split('{sep}')[::-1])", f"return '{sep}'.join(reversed({s}.split('{sep}')))",
         f"out = []\nfor part in {s}.split('{sep}'):\n    out.insert(0, part)\nreturn '{sep}'.join(out)"),
        [(_sentence(rng, 3, 4, sep),), ("",), (rng.choice(WORDS),), (_sentence(rng, 2, 2, sep),),
         (_sentence(rng, 5, 6, sep),)],
    )


def _palindrome(rng: random.Random) -> _Spec:
    fold, s = rng.random() < 0.5, rng.choice(STR_NAMES)
    word = _string(rng, "abc", 2, 3)
    if fold:
        doc = f"Return True if {s} reads the same forwards and backwards, ignoring case."
        bodies = (f"t = {s}.lower()\nreturn t == t[::-1]", f"return {s}.lower() == {s}[::-1].lower()",
                  f"t = {s}.lower()\nfor i in range(len(t) // 2):\n    if t[i] != t[-1 - i]:\n        return False\n"
                  "return True")
        inputs = [("Level",), ("",), ("a",), (word + word[::-1].upper(),), ("abca",), ("Noon",), (word + "x",)]
    else:
        doc = f"Return True if {s} reads the same forwards and backwards."
        bodies = (f"return {s} == {s}[::-1]", f"return list({s}) == list(reversed({s}))",
                  f"for i in range(len({s}) // 2):\n    if {s}[i] != {s}[-1 - i]:\n        return False\nreturn True")
        inputs = [("level",), ("",), ("a",), (word + word[::-1],), ("abca",), ("Aba",), (word + "x" + word[::-1],)]
    return _Spec(rng.choice(("is_palindrome", "reads_same_backwards", "is_mirror")), f"{s}: str", "bool", doc,
                 bodies, inputs)


def _acronym(rng: random.Random) -> _Spec:
    sep, s = rng.choice(("", ".", "-")), rng.choice(("s", "text", "phrase"))
    joined = "" if not sep else f", joined by '{sep}'"
    return _Spec(
        rng.choice(("acronym", "initials", "first_letters")), f"{s}: str", "str",
        f"Return the upper-cased first letters of the words of {s}{joined}.",
        (f"out = []\nfor w in {s}.split():\n    out.append(w[0].upper())\nreturn '{sep}'.join(out)",
         f"return '{sep}'.join(w[0].upper() for w in {s}.split())",
         f"return '{sep}'.join([w[0] for w in {s}.split()]).upper()"),
        [(_sentence(rng, 3, 4),), ("",), (rng.choice(WORDS),), ("  to be  ",), (_sentence(rng, 5, 6),)],
    )


def _caesar(rng: random.Random) -> _Spec:
    k, s = rng.randint(1, 25), rng.choice(STR_NAMES)
    return _Spec(
        rng.choice((f"caesar_{k}", f"shift_letters_{k}", f"rotate_{k}")), f"{s}: str", "str",
        f"Return {s} with every lowercase letter shifted {k} places forward in the alphabet (z wraps to a); "
        "other characters are unchanged.",
        (f"out = ''\nfor ch in {s}:\n    if 'a' <= ch <= 'z':\n        out += chr((ord(ch) - 97 + {k}) % 26 + 97)\n"
         f"    else:\n        out += ch\nreturn out",
         f"return ''.join(chr((ord(ch) - ord('a') + {k}) % 26 + ord('a')) if 'a' <= ch <= 'z' else ch for ch in {s})",
         f"letters = 'abcdefghijklmnopqrstuvwxyz'\nout = []\nfor ch in {s}:\n    if ch in letters:\n"
         f"        out.append(letters[(letters.index(ch) + {k}) % 26])\n    else:\n        out.append(ch)\n"
         "return ''.join(out)"),
        [(_string(rng, LETTERS, 4, 6),), ("",), ("xyz",), ("a-z!",), ("Zebra",), (_sentence(rng, 2, 3),)],
    )


def _sum_multiples(rng: random.Random) -> _Spec:
    k, xs = rng.randint(2, 5), rng.choice(LIST_NAMES)
    name = rng.choice(("sum_even", "sum_evens") if k == 2 else (f"sum_multiples_of_{k}", f"sum_div_by_{k}"))
    which = f"the even elements of {xs}" if k == 2 else f"the elements of {xs} that are divisible by {k}"
    return _Spec(
        name, f"{xs}: list[int]", "int", f"Return the sum of {which}.",
        (f"total = 0\nfor x in {xs}:\n    if x % {k} == 0:\n        total += x\nreturn total",
         f"return sum(x for x in {xs} if x % {k} == 0)", f"return sum([x for x in {xs} if x % {k} == 0])"),
        [(_ints(rng, 4, 6),), ([],), ([k],), ([1],), ([k * i for i in range(1, 4)],), (_ints(rng, 6, 9),)],
    )


def _count_greater(rng: random.Random) -> _Spec:
    k, xs = rng.randint(-3, 9), rng.choice(LIST_NAMES)
    above = f"count_above_{k}" if k >= 0 else f"count_above_minus_{-k}"
    return _Spec(
        rng.choice((above, "count_greater", "how_many_above")), f"{xs}: list[int]", "int",
        f"Return how many elements of {xs} are greater than {k}.",
        (f"count = 0\nfor x in {xs}:\n    if x > {k}:\n        count += 1\nreturn count",
         f"return sum(1 for x in {xs} if x > {k})", f"return len([x for x in {xs} if x > {k}])"),
        [(_ints(rng, 4, 6) + [k + 1],), ([],), ([k],), ([k - 1, k, k + 1],), (_ints(rng, 6, 9),)],
    )


def _scale(rng: random.Random) -> _Spec:
    k, xs = rng.randint(2, 9), rng.choice(LIST_NAMES)
    return _Spec(
        rng.choice((f"times_{k}", f"scale_by_{k}", f"multiply_all_by_{k}")), f"{xs}: list[int]", "list[int]",
        f"Return a new list with every element of {xs} multiplied by {k}.",
        (f"out = []\nfor x in {xs}:\n    out.append(x * {k})\nreturn out", f"return [x * {k} for x in {xs}]",
         f"return list(map(lambda x: x * {k}, {xs}))"),
        [(_ints(rng, 3, 4),), ([],), ([0],), ([1, -1],), (_ints(rng, 5, 7),)],
    )


def _running_sum(rng: random.Random) -> _Spec:
    xs = rng.choice(LIST_NAMES)
    return _Spec(
        rng.choice(("running_sum", "prefix_sums", "cumulative_sum")), f"{xs}: list[int]", "list[int]",
        f"Return the list whose i-th element is the sum of {xs}[0] .. {xs}[i].",
        (f"out = []\ntotal = 0\nfor x in {xs}:\n    total += x\n    out.append(total)\nreturn out",
         f"return [sum({xs}[:i + 1]) for i in range(len({xs}))]",
         f"out = {xs}[:1]\nfor x in {xs}[1:]:\n    out.append(out[-1] + x)\nreturn out"),
        [(_ints(rng, 3, 4, 1, 9),), ([],), ([5],), ([2, -2, 3],), (_ints(rng, 5, 7),)],
    )


def _max_gap(rng: random.Random) -> _Spec:
    xs = rng.choice(LIST_NAMES)
    return _Spec(
        rng.choice(("max_gap", "largest_step", "max_jump")), f"{xs}: list[int]", "int",
        f"Return the largest absolute difference between neighbouring elements of {xs} (0 if it has fewer than two).",
        (f"best = 0\nfor i in range(1, len({xs})):\n    best = max(best, abs({xs}[i] - {xs}[i - 1]))\nreturn best",
         f"return max((abs(b - a) for a, b in zip({xs}, {xs}[1:])), default=0)",
         f"best = 0\nfor a, b in zip({xs}, {xs}[1:]):\n    if abs(b - a) > best:\n        best = abs(b - a)\n"
         "return best"),
        [(_ints(rng, 4, 5),), ([],), ([4],), ([9, 1, 2],), ([1, 2, 10],), (_ints(rng, 6, 8),)],
    )


def _index_of_extreme(rng: random.Random) -> _Spec:
    largest, xs = rng.random() < 0.5, rng.choice(LIST_NAMES)
    which, cmp, fn = ("largest", ">", "max") if largest else ("smallest", "<", "min")
    values = _ints(rng, 4, 6)
    extreme = max(values) if largest else min(values)
    return _Spec(
        rng.choice((f"index_of_{fn}", f"arg{fn}", f"position_of_{which}")), f"{xs}: list[int]", "int",
        f"Return the index of the first {which} element of {xs} (-1 if it is empty).",
        (f"if not {xs}:\n    return -1\nbest = 0\nfor i in range(1, len({xs})):\n    if {xs}[i] {cmp} {xs}[best]:\n"
         "        best = i\nreturn best",
         f"if not {xs}:\n    return -1\nreturn {xs}.index({fn}({xs}))",
         f"best = -1\nfor i, x in enumerate({xs}):\n    if best == -1 or x {cmp} {xs}[best]:\n        best = i\n"
         "return best"),
        [(values,), ([],), ([7],), (values + [extreme],), ([extreme] + values,),
         ([0, 9, 2] if largest else [5, -3, 4],),  # the extreme at index 1 catches a loop starting at 2
         (_ints(rng, 6, 8),)],
    )


def _dedupe(rng: random.Random) -> _Spec:
    xs = rng.choice(LIST_NAMES)
    return _Spec(
        rng.choice(("dedupe", "unique_in_order", "remove_duplicates")), f"{xs}: list[int]", "list[int]",
        f"Return the elements of {xs} without repeats, keeping the order of first occurrence.",
        (f"out = []\nfor x in {xs}:\n    if x not in out:\n        out.append(x)\nreturn out",
         f"return list(dict.fromkeys({xs}))", f"return [x for i, x in enumerate({xs}) if x not in {xs}[:i]]"),
        [(_ints(rng, 5, 7, 0, 4),), ([],), ([3, 3, 3],), ([1, 2, 1, 2],), (_ints(rng, 8, 10, 0, 6),)],
    )


def _rotate_left(rng: random.Random) -> _Spec:
    k, xs = rng.randint(1, 4), rng.choice(LIST_NAMES)
    return _Spec(
        rng.choice((f"rotate_left_{k}", f"shift_left_{k}", f"cycle_{k}")), f"{xs}: list[int]", "list[int]",
        f"Return {xs} rotated left by {k} positions, cyclically (the first element moves to the end {k} times).",
        (f"if not {xs}:\n    return []\nj = {k} % len({xs})\nreturn {xs}[j:] + {xs}[:j]",
         f"out = list({xs})\nif out:\n    for _ in range({k}):\n        out.append(out.pop(0))\nreturn out",
         f"n = len({xs})\nreturn [{xs}[(i + {k}) % n] for i in range(n)]"),
        [([1, 2, 3, 4, 5, 6],), ([],), ([7],), (list(range(1, k + 1)),), (list(range(1, k + 2)),),
         (_ints(rng, 5, 7),)],
    )


def _second_largest(rng: random.Random) -> _Spec:
    xs = rng.choice(LIST_NAMES)
    return _Spec(
        rng.choice(("second_largest", "runner_up", "second_max")), f"{xs}: list[int]", "int | None",
        f"Return the second largest distinct value in {xs}, or None if there is none.",
        (f"distinct = sorted(set({xs}))\nif len(distinct) < 2:\n    return None\nreturn distinct[-2]",
         f"best = None\nsecond = None\nfor x in sorted(set({xs})):\n    second = best\n    best = x\nreturn second",
         f"top = max({xs}, default=None)\nrest = [x for x in {xs} if x != top]\nreturn max(rest, default=None)"),
        [(_ints(rng, 4, 6),), ([],), ([4],), ([5, 5],), ([1, 3, 3, 2],), ([-4, -1, -7],), (_ints(rng, 6, 8),)],
    )


def _clamp(rng: random.Random) -> _Spec:
    lo, x = rng.randint(-10, 5), rng.choice(INT_NAMES)
    hi = lo + rng.randint(3, 20)
    return _Spec(
        rng.choice(("clamp", "bound", "limit")), f"{x}: int", "int", f"Return {x} limited to the range [{lo}, {hi}].",
        (f"if {x} < {lo}:\n    return {lo}\nif {x} > {hi}:\n    return {hi}\nreturn {x}",
         f"return max({lo}, min({x}, {hi}))", f"return min(max({x}, {lo}), {hi})",
         f"if {x} < {lo}:\n    return {lo}\nelif {x} > {hi}:\n    return {hi}\nelse:\n    return {x}"),
        [(hi + 5,), (lo,), (hi,), (lo - 1,), (hi + 1,), (lo + 1,), (lo - rng.randint(5, 30),)],
    )


def _sign(rng: random.Random) -> _Spec:
    x = rng.choice(INT_NAMES)
    return _Spec(
        rng.choice(("sign", "signum", "sign_of")), f"{x}: int", "int",
        f"Return 1 if {x} is positive, -1 if it is negative and 0 if it is zero.",
        (f"if {x} > 0:\n    return 1\nif {x} < 0:\n    return -1\nreturn 0", f"return ({x} > 0) - ({x} < 0)",
         f"if {x} > 0:\n    return 1\nelif {x} < 0:\n    return -1\nelse:\n    return 0"),
        [(rng.randint(2, 50),), (0,), (1,), (-1,), (-rng.randint(2, 50),)],
    )


def _within(rng: random.Random) -> _Spec:
    k, (a, b) = rng.randint(1, 9), rng.choice((("a", "b"), ("x", "y"), ("m", "n")))
    return _Spec(
        rng.choice((f"within_{k}", "close_enough", "near")), f"{a}: int, {b}: int", "bool",
        f"Return True if {a} and {b} differ by at most {k}.",
        (f"return abs({a} - {b}) <= {k}", f"return -{k} <= {a} - {b} <= {k}",
         f"if {a} > {b}:\n    return {a} - {b} <= {k}\nreturn {b} - {a} <= {k}"),
        [(3, 3 + k), (k, 0), (0, k + 1), (k + 1, 0), (5, 5), (-k, 0), (2, 3 + k)],
    )


def _bucket(rng: random.Random) -> _Spec:
    a, x = rng.randint(-5, 20), rng.choice(INT_NAMES)
    b = a + rng.randint(2, 15)
    low, mid, high = rng.choice((("low", "mid", "high"), ("cold", "warm", "hot"), ("small", "medium", "large")))
    return _Spec(
        rng.choice(("bucket", "classify", "band")), f"{x}: int", "str",
        f"Return '{low}' if {x} < {a}, '{mid}' if {x} < {b}, otherwise '{high}'.",
        (f"if {x} < {a}:\n    return '{low}'\nelif {x} < {b}:\n    return '{mid}'\nelse:\n    return '{high}'",
         f"if {x} < {a}:\n    return '{low}'\nif {x} < {b}:\n    return '{mid}'\nreturn '{high}'",
         f"if {x} >= {b}:\n    return '{high}'\nif {x} >= {a}:\n    return '{mid}'\nreturn '{low}'"),
        [(a + 1,), (a,), (b,), (a - 1,), (b - 1,), (a - 10,), (b + 10,)],
    )


def _fizz(rng: random.Random) -> _Spec:
    a, b = rng.choice(((2, 3), (2, 5), (3, 4), (3, 5), (2, 7), (3, 7), (4, 5), (5, 7)))
    w1, w2 = rng.sample(("Fizz", "Buzz", "Bang", "Pop", "Zap", "Boom"), 2)
    n = rng.choice(INT_NAMES)
    return _Spec(
        rng.choice(("fizz_buzz", "say", "fizz_like")), f"{n}: int", "str",
        f"Return '{w1}{w2}' if {n} is divisible by both {a} and {b}, '{w1}' if only by {a}, '{w2}' if only by {b}, "
        f"otherwise str({n}).",
        (f"if {n} % {a} == 0 and {n} % {b} == 0:\n    return '{w1}{w2}'\nif {n} % {a} == 0:\n    return '{w1}'\n"
         f"if {n} % {b} == 0:\n    return '{w2}'\nreturn str({n})",
         f"out = ''\nif {n} % {a} == 0:\n    out += '{w1}'\nif {n} % {b} == 0:\n    out += '{w2}'\n"
         f"return out or str({n})",
         f"if {n} % {a * b} == 0:\n    return '{w1}{w2}'\nelif {n} % {a} == 0:\n    return '{w1}'\n"
         f"elif {n} % {b} == 0:\n    return '{w2}'\nreturn str({n})"),
        [(a * b,), (a,), (b,), (1,), (2 * a * b,), (a * b + 1,), (rng.randint(8, 99),)],
    )


def _leap(rng: random.Random) -> _Spec:
    y = rng.choice(("year", "y"))
    return _Spec(
        rng.choice(("is_leap", "leap_year", "is_leap_year")), f"{y}: int", "bool",
        f"Return True if {y} is a leap year in the Gregorian calendar.",
        (f"return {y} % 4 == 0 and ({y} % 100 != 0 or {y} % 400 == 0)",
         f"if {y} % 400 == 0:\n    return True\nif {y} % 100 == 0:\n    return False\nreturn {y} % 4 == 0",
         f"if {y} % 4 != 0:\n    return False\nif {y} % 100 != 0:\n    return True\nreturn {y} % 400 == 0"),
        [(2024,), (1900,), (2000,), (2023,), (2100,), (1996,), (2400,), (rng.randint(1601, 2399),)],
    )


def _triangle(rng: random.Random) -> _Spec:
    a, b, c = rng.choice((("a", "b", "c"), ("x", "y", "z"), ("p", "q", "r")))
    return _Spec(
        rng.choice(("triangle_kind", "classify_triangle", "triangle_type")), f"{a}: int, {b}: int, {c}: int", "str",
        f"Return 'equilateral' if {a}, {b} and {c} are all equal, 'isosceles' if exactly two are equal, "
        "otherwise 'scalene'.",
        (f"if {a} == {b} == {c}:\n    return 'equilateral'\nif {a} == {b} or {b} == {c} or {a} == {c}:\n"
         "    return 'isosceles'\nreturn 'scalene'",
         f"distinct = len({{{a}, {b}, {c}}})\nif distinct == 1:\n    return 'equilateral'\nif distinct == 2:\n"
         "    return 'isosceles'\nreturn 'scalene'",
         f"return ['equilateral', 'isosceles', 'scalene'][len(set(({a}, {b}, {c}))) - 1]"),
        [(3, 4, 4), (3, 3, 3), (3, 3, 4), (4, 3, 3), (3, 4, 3), (3, 4, 5), (rng.randint(5, 9), 2, 4)],
    )


def _factorial(rng: random.Random) -> _Spec:
    n = rng.choice(INT_NAMES)
    return _Spec(
        rng.choice(("factorial", "fact", "product_up_to")), f"{n}: int", "int",
        f"Return the product of the integers from 1 to {n} (1 when {n} < 1).",
        (f"result = 1\nfor i in range(2, {n} + 1):\n    result *= i\nreturn result",
         f"result = 1\nfor i in range(1, {n} + 1):\n    result = result * i\nreturn result",
         f"result = 1\nfor i in range({n}, 1, -1):\n    result *= i\nreturn result"),
        [(5,), (0,), (1,), (2,), (rng.randint(6, 12),), (-rng.randint(1, 4),)],
    )


def _fib_like(rng: random.Random) -> _Spec:
    a0, a1, n = rng.randint(0, 4), rng.randint(1, 5), rng.choice(("n", "k", "i"))
    return _Spec(
        rng.choice(("fib_like", "sequence_term", f"fib_{a0}_{a1}")), f"{n}: int", "int",
        f"Return term {n} (counting from 0) of the sequence that starts {a0}, {a1} and continues with the sum of "
        "the previous two terms.",
        (f"a, b = {a0}, {a1}\nfor _ in range({n}):\n    a, b = b, a + b\nreturn a",
         f"terms = [{a0}, {a1}]\nfor j in range(2, {n} + 1):\n    terms.append(terms[j - 1] + terms[j - 2])\n"
         f"return terms[{n}]",
         f"a = {a0}\nb = {a1}\nfor _ in range({n}):\n    c = a + b\n    a = b\n    b = c\nreturn a"),
        [(5,), (0,), (1,), (2,), (rng.randint(6, 15),)],
    )


def _count_div_either(rng: random.Random) -> _Spec:
    a, b = sorted(rng.sample(range(2, 8), 2))
    n = rng.choice(INT_NAMES)
    return _Spec(
        rng.choice((f"count_div_{a}_or_{b}", "count_either", "multiples_of_either")), f"{n}: int", "int",
        f"Return how many integers from 1 to {n} inclusive are divisible by {a} or by {b}.",
        (f"count = 0\nfor i in range(1, {n} + 1):\n    if i % {a} == 0 or i % {b} == 0:\n        count += 1\n"
         "return count",
         f"return sum(1 for i in range(1, {n} + 1) if i % {a} == 0 or i % {b} == 0)",
         f"return len([i for i in range(1, {n} + 1) if i % {a} == 0 or i % {b} == 0])"),
        [(a * b,), (0,), (1,), (a,), (b,), (rng.randint(10, 60),)],
    )


def _count_pairs(rng: random.Random) -> _Spec:
    t, xs = rng.randint(2, 12), rng.choice(LIST_NAMES)
    return _Spec(
        rng.choice(("count_pairs", f"pairs_summing_to_{t}", "two_sum_count")), f"{xs}: list[int]", "int",
        f"Return the number of index pairs i < j such that {xs}[i] + {xs}[j] == {t}.",
        (f"count = 0\nfor i in range(len({xs})):\n    for j in range(i + 1, len({xs})):\n"
         f"        if {xs}[i] + {xs}[j] == {t}:\n            count += 1\nreturn count",
         f"n = len({xs})\nreturn sum(1 for i in range(n) for j in range(i + 1, n) if {xs}[i] + {xs}[j] == {t})",
         f"count = 0\nfor i, x in enumerate({xs}):\n    for y in {xs}[i + 1:]:\n        if x + y == {t}:\n"
         "            count += 1\nreturn count"),
        [(_ints(rng, 4, 6, 0, t),), ([],), ([t],), ([t // 2, t - t // 2],), ([t // 2] * 3 + [t - t // 2],),
         (_ints(rng, 7, 9, 0, t),)],
    )


def _join_range(rng: random.Random) -> _Spec:
    sep, n = rng.choice((",", "-", " ", ", ", "+", "|")), rng.choice(INT_NAMES)
    return _Spec(
        rng.choice(("count_up", "join_numbers", "number_line")), f"{n}: int", "str",
        f"Return the numbers from 1 to {n} joined by '{sep}'.",
        (f"parts = []\nfor i in range(1, {n} + 1):\n    parts.append(str(i))\nreturn '{sep}'.join(parts)",
         f"return '{sep}'.join(str(i) for i in range(1, {n} + 1))",
         f"return '{sep}'.join(map(str, range(1, {n} + 1)))"),
        [(3,), (0,), (1,), (rng.randint(4, 12),)],
    )


def _alternating_sum(rng: random.Random) -> _Spec:
    xs = rng.choice(LIST_NAMES)
    return _Spec(
        rng.choice(("alternating_sum", "alt_sum", "plus_minus_sum")), f"{xs}: list[int]", "int",
        f"Return {xs}[0] - {xs}[1] + {xs}[2] - ... (0 for an empty list).",
        (f"total = 0\nfor i, x in enumerate({xs}):\n    if i % 2 == 0:\n        total += x\n    else:\n"
         "        total -= x\nreturn total",
         f"return sum({xs}[::2]) - sum({xs}[1::2])",
         f"return sum(x if i % 2 == 0 else -x for i, x in enumerate({xs}))"),
        [(_ints(rng, 4, 5, 1, 9),), ([],), ([6],), ([2, 5],), (_ints(rng, 6, 8),)],
    )


def _multiples(rng: random.Random) -> _Spec:
    k, n = rng.randint(2, 9), rng.choice(("n", "count", "m"))
    return _Spec(
        rng.choice((f"multiples_of_{k}", f"first_multiples_{k}", f"table_of_{k}")), f"{n}: int", "list[int]",
        f"Return the first {n} positive multiples of {k}, in increasing order.",
        (f"out = []\nfor i in range(1, {n} + 1):\n    out.append({k} * i)\nreturn out",
         f"return [{k} * i for i in range(1, {n} + 1)]", f"return list(range({k}, {k} * {n} + 1, {k}))"),
        [(4,), (0,), (1,), (rng.randint(5, 10),)],
    )


TEMPLATES = (
    _Template("add_k", "arithmetic", "easy", _add_k),
    _Template("affine", "arithmetic", "easy", _affine),
    _Template("divmod", "arithmetic", "medium", _divmod),
    _Template("digit_sum", "arithmetic", "medium", _digit_sum),
    _Template("count_multiples", "arithmetic", "medium", _count_multiples),
    _Template("sum_powers", "arithmetic", "medium", _sum_powers),
    _Template("count_char", "strings", "easy", _count_char),
    _Template("repeat_chars", "strings", "easy", _repeat_chars),
    _Template("reverse_fields", "strings", "medium", _reverse_fields),
    _Template("palindrome", "strings", "medium", _palindrome),
    _Template("acronym", "strings", "medium", _acronym),
    _Template("caesar", "strings", "hard", _caesar),
    _Template("sum_multiples", "lists", "easy", _sum_multiples),
    _Template("count_greater", "lists", "easy", _count_greater),
    _Template("scale", "lists", "easy", _scale),
    _Template("running_sum", "lists", "medium", _running_sum),
    _Template("max_gap", "lists", "medium", _max_gap),
    _Template("index_of_extreme", "lists", "medium", _index_of_extreme),
    _Template("dedupe", "lists", "medium", _dedupe),
    _Template("rotate_left", "lists", "hard", _rotate_left),
    _Template("second_largest", "lists", "hard", _second_largest),
    _Template("clamp", "conditionals", "easy", _clamp),
    _Template("sign", "conditionals", "easy", _sign),
    _Template("within", "conditionals", "easy", _within),
    _Template("bucket", "conditionals", "medium", _bucket),
    _Template("fizz", "conditionals", "hard", _fizz),
    _Template("leap", "conditionals", "hard", _leap),
    _Template("triangle", "conditionals", "hard", _triangle),
    _Template("factorial", "loops", "medium", _factorial),
    _Template("fib_like", "loops", "medium", _fib_like),
    _Template("count_div_either", "loops", "medium", _count_div_either),
    _Template("count_pairs", "loops", "hard", _count_pairs),
    _Template("join_range", "loops", "easy", _join_range),
    _Template("alternating_sum", "loops", "medium", _alternating_sum),
    _Template("multiples", "loops", "easy", _multiples),
)


# --------------------------------------------------------------------------------------------------- mutations
MUTATION_KINDS = ("off_by_one", "wrong_operator", "missing_case", "wrong_init", "wrong_return")

_BINOP_SWAP = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "+"), ast.FloorDiv: ("//", "/"),
               ast.Mod: ("%", "//"), ast.Pow: ("**", "*")}
_BOUNDARY = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="), ast.GtE: (">=", ">")}
_FLIP = {ast.Eq: ("==", "!="), ast.NotEq: ("!=", "=="), ast.In: ("in", "not in"), ast.NotIn: ("not in", "in"),
         ast.Lt: ("<", ">"), ast.Gt: (">", "<"), ast.LtE: ("<=", ">="), ast.GtE: (">=", "<="),
         ast.Is: ("is", "is not"), ast.IsNot: ("is not", "is")}
_BUILTIN_SWAP = {"min": "max", "max": "min", "any": "all", "all": "any"}
_DROPPABLE_CALLS = ("abs", "reversed")  # forgetting them is a classic missing case (negatives, order)
_ATOMIC = (ast.Name, ast.Constant, ast.Call, ast.Attribute, ast.Subscript, ast.List, ast.Tuple)


@dataclass(frozen=True)
class _Edit:
    """Replace body[start:end] by text."""

    kind: str
    start: int
    end: int
    text: str


def _int_of(node: ast.AST) -> int | None:
    """The value of an int literal (including a negated one), else None."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _int_of(node.operand)
        return None if inner is None else -inner
    return None


class _Source:
    """A body's text and its AST, with node spans as character offsets (the templates are ASCII)."""

    def __init__(self, body: str):
        self.text = body
        self.tree = ast.parse(body)
        self.line_starts = [0] + [i + 1 for i, ch in enumerate(body) if ch == "\n"]
        self.parents = {id(c): n for n in ast.walk(self.tree) for c in ast.iter_child_nodes(n)}

    def pos(self, lineno: int, col: int) -> int:
        return self.line_starts[lineno - 1] + col

    def span(self, node: ast.AST) -> tuple[int, int]:
        return self.pos(node.lineno, node.col_offset), self.pos(node.end_lineno, node.end_col_offset)

    def seg(self, node: ast.AST) -> str:
        start, end = self.span(node)
        return self.text[start:end]

    def lines(self, first: int, last: int) -> tuple[int, int]:
        """Character span of whole lines first..last (1-based, inclusive, with the newline)."""
        end = self.line_starts[last] if last < len(self.line_starts) else len(self.text)
        return self.line_starts[first - 1], end

    def shifted(self, node: ast.expr, delta: int) -> str:
        """Text of `node + delta`, folded into an int literal or a trailing `± c` when there is one."""
        value = _int_of(node)
        if value is not None:
            return str(value + delta)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)) and _int_of(node.right) is not None:
            c = _int_of(node.right) * (1 if isinstance(node.op, ast.Add) else -1) + delta
            left = self.seg(node.left)
            return left if c == 0 else f"{left} + {c}" if c > 0 else f"{left} - {-c}"
        text = self.seg(node) if isinstance(node, (*_ATOMIC, ast.BinOp)) else f"({self.seg(node)})"
        return f"{text} + {delta}" if delta > 0 else f"{text} - {-delta}"


def _edits(body: str, params: list[str]) -> list[_Edit]:
    """Every mutation the body admits, in a deterministic order. Some may not parse; the caller checks."""
    src = _Source(body)
    edits: list[_Edit] = []

    def add(kind: str, node_or_span: ast.AST | tuple[int, int], text: str) -> None:
        start, end = node_or_span if isinstance(node_or_span, tuple) else src.span(node_or_span)
        edits.append(_Edit(kind, start, end, text))

    def operator(kind: str, left: ast.AST, right: ast.AST, old: str, new: str) -> None:
        # Between two operands there is only whitespace, parentheses and the operator itself.
        start, end = src.span(left)[1], src.span(right)[0]
        add(kind, (start, end), src.text[start:end].replace(old, new, 1))

    def shift_both(kind: str, node: ast.expr, skip_zero: bool = False) -> None:
        for delta in (1, -1):
            text = src.shifted(node, delta)
            if not (skip_zero and text == "0"):
                add(kind, node, text)

    local_names = sorted(set(params) | {
        n.id for node in ast.walk(src.tree)
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.For))
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        for n in ast.walk(t) if isinstance(n, ast.Name) and n.id != "_"
    })

    for node in ast.walk(src.tree):
        if isinstance(node, ast.BinOp):
            if type(node.op) in _BINOP_SWAP:
                operator("wrong_operator", node.left, node.right, *_BINOP_SWAP[type(node.op)])
            for side in (node.left, node.right):
                if _int_of(side) is not None:
                    shift_both("off_by_one", side, skip_zero=True)
        elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOP_SWAP:
            old, new = _BINOP_SWAP[type(node.op)]
            operator("wrong_operator", node.target, node.value, old + "=", new + "=")
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for i, op in enumerate(node.ops):
                if type(op) in _BOUNDARY:
                    operator("off_by_one", operands[i], operands[i + 1], *_BOUNDARY[type(op)])
                if type(op) in _FLIP:
                    operator("wrong_operator", operands[i], operands[i + 1], *_FLIP[type(op)])
            for side in operands:
                if _int_of(side) is not None:
                    shift_both("off_by_one", side)
        elif isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else None
            if name == "range":
                for arg in node.args[:2] if len(node.args) > 1 else node.args:  # start and stop, not step
                    shift_both("off_by_one", arg)
            else:  # max(-3, x), xs.insert(0, x), xs.pop(0)
                for arg in node.args:
                    if _int_of(arg) is not None:
                        shift_both("off_by_one", arg)
            if name in _BUILTIN_SWAP:
                add("wrong_operator", node.func, _BUILTIN_SWAP[name])
            if name in _DROPPABLE_CALLS and len(node.args) == 1:
                arg, parent = node.args[0], src.parents.get(id(node))
                bare = isinstance(arg, _ATOMIC) or not isinstance(parent, (ast.BinOp, ast.UnaryOp, ast.Attribute))
                add("missing_case", node, src.seg(arg) if bare else f"({src.seg(arg)})")
        elif isinstance(node, ast.Subscript):
            index = node.slice
            if isinstance(index, ast.Slice):
                if index.step is not None and _int_of(index.step) == -1 and index.lower is index.upper is None:
                    add("missing_case", node, src.seg(node.value))  # forgot to reverse
                for bound in (index.lower, index.upper):
                    if bound is not None:
                        shift_both("off_by_one", bound)
            else:
                shift_both("off_by_one", index)
        elif isinstance(node, ast.BoolOp):
            old, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
            for left, right in zip(node.values, node.values[1:]):
                operator("wrong_operator", left, right, old, new)
            for i in range(len(node.values)):  # drop one condition together with its connective
                if i == 0:
                    add("missing_case", (src.span(node.values[0])[0], src.span(node.values[1])[0]), "")
                else:
                    add("missing_case", (src.span(node.values[i - 1])[1], src.span(node.values[i])[1]), "")
        elif isinstance(node, ast.IfExp):
            add("missing_case", node, src.seg(node.body))
            add("missing_case", node, src.seg(node.orelse))
        elif isinstance(node, ast.comprehension):
            previous = node.iter
            for cond in node.ifs:  # drop a filter
                add("missing_case", (src.span(previous)[1], src.span(cond)[1]), "")
                previous = cond
        elif isinstance(node, ast.If):
            _branch_edits(src, node, add)
        elif isinstance(node, ast.Assign):
            values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
            for value in values:
                v = _int_of(value)
                if isinstance(value, ast.Constant) and type(value.value) is bool:
                    add("wrong_init", value, str(not value.value))
                elif v is not None:
                    add("wrong_init", value, str({0: 1, 1: 0}.get(v, v + 1)))
                elif isinstance(value, ast.Subscript) and _int_of(value.slice) is not None:
                    add("wrong_init", value, "0")
        elif isinstance(node, ast.Return) and node.value is not None:
            value = node.value
            if isinstance(value, ast.Name):
                for other in local_names:
                    if other != value.id:
                        add("wrong_return", value, other)
            elif isinstance(value, ast.Constant) and type(value.value) is bool:
                add("wrong_return", value, str(not value.value))
            elif _int_of(value) is not None:
                shift_both("wrong_return", value)
    return edits


def _branch_edits(src: _Source, node: ast.If, add: Callable[[str, tuple[int, int], str], None]) -> None:
    """Missing-case edits of an if statement, made on whole lines so the rest keeps its layout."""
    is_elif = src.text[src.line_starts[node.lineno - 1]:].lstrip().startswith("elif")
    if is_elif:  # drop this branch: the next elif/else then belongs to the previous branch
        add("missing_case", src.lines(node.lineno, node.body[-1].end_lineno), "")
        return
    if not node.orelse:  # drop a guard or a whole case
        add("missing_case", src.lines(node.lineno, node.end_lineno), "")
        return

    def dedented(first: int, last: int) -> str:
        start, end = src.lines(first, last)
        return "".join(line[4:] for line in src.text[start:end].splitlines(keepends=True))

    whole = src.lines(node.lineno, node.end_lineno)
    add("missing_case", whole, dedented(node.body[0].lineno, node.body[-1].end_lineno))  # drop the else
    first_else = node.orelse[0]
    if src.text[src.line_starts[first_else.lineno - 1]:].lstrip().startswith("elif"):
        # drop the if-branch: the elif becomes the if
        indent = src.text[whole[0]:src.pos(node.lineno, node.col_offset)]
        elif_at = src.pos(first_else.lineno, 0) + len(indent)
        add("missing_case", (whole[0], elif_at + len("elif")), indent + "if")
    else:
        add("missing_case", whole, dedented(first_else.lineno, node.orelse[-1].end_lineno))


def _mutants(spec: _Spec, n: int, rng: random.Random) -> list[str]:
    """Up to n distinct mutants of the spec's bodies: pick a body, then a mutation kind, then a site."""
    params = [p.split(":")[0].strip() for p in spec.params.split(",")]
    seen = {_ast_key(body) for body in spec.bodies}
    out: list[str] = []
    for _ in range(20 * n):
        if len(out) == n:
            break
        body = rng.choice(spec.bodies)
        edits = _edits(body, params)
        if not edits:
            continue
        kind = rng.choice([k for k in MUTATION_KINDS if any(e.kind == k for e in edits)])
        edit = rng.choice([e for e in edits if e.kind == kind])
        mutant = (body[: edit.start] + edit.text + body[edit.end:]).rstrip()  # no trailing blank lines
        try:
            compile(_function_source(spec, mutant), "<mutant>", "exec")
        except SyntaxError:
            continue
        key = _ast_key(mutant)
        if key not in seen:  # a mutant equal to a correct body or to another mutant is no new completion
            seen.add(key)
            out.append(mutant)
    return out


def _ast_key(body: str) -> str:
    return ast.dump(ast.parse(body))


# --------------------------------------------------------------------------------------------------- problems
def _function_source(spec: _Spec, body: str) -> str:
    return f"def {spec.name}({spec.params}) -> {spec.returns}:\n{_completion(body)}"


def _completion(body: str) -> str:
    return textwrap.indent(body, "    ") + "\n"


def _call(spec: _Spec, args: tuple[Any, ...]) -> str:
    return f"{spec.name}({', '.join(repr(a) for a in args)})"


def _expected(spec: _Spec, inputs: list[tuple[Any, ...]]) -> list[Any]:
    """Outputs of the canonical body. It is our own code, so it is run in-process (no subprocess needed)."""
    namespace: dict[str, Any] = {}
    exec(compile(_function_source(spec, spec.bodies[0]), f"<{spec.name}>", "exec"), namespace)
    fn = namespace[spec.name]
    return [fn(*copy.deepcopy(args)) for args in inputs]


def _prompt(spec: _Spec, example: str, output: Any) -> str:
    doc = textwrap.fill(spec.doc, width=100, initial_indent="    " + '"""', subsequent_indent="    ")
    return (f"def {spec.name}({spec.params}) -> {spec.returns}:\n{doc}\n\n"
            f"    >>> {example}\n    {output!r}\n    \"\"\"\n")


def _unique_inputs(inputs: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    seen: set[str] = set()
    out = []
    for args in inputs:
        if repr(args) not in seen:
            seen.add(repr(args))
            out.append(args)
    return out


def _problem(index: int, template: _Template, spec: _Spec, cfg: SyntheticDataConfig) -> Problem:
    inputs = _unique_inputs(spec.inputs)
    if len(inputs) < 4:
        raise RuntimeError(f"template {template.name} gave {len(inputs)} distinct test inputs; at least 4 needed")
    outputs = _expected(spec, inputs)
    tests = [f"assert {_call(spec, args)} == {out!r}" for args, out in zip(inputs, outputs)]
    # Solutions draw from their own RNG so that changing n_correct/n_incorrect leaves the problems unchanged.
    rng = random.Random(f"{cfg.seed}:{index}:solutions")
    correct = rng.sample(spec.bodies, min(cfg.n_correct, len(spec.bodies)))
    return Problem(
        problem_id=f"{template.name}-{index:04d}",
        family=template.family,
        difficulty=template.difficulty,
        prompt=_prompt(spec, _call(spec, inputs[0]), outputs[0]),
        entry_point=spec.name,
        tests=tests,
        correct=[_completion(b) for b in correct],
        incorrect=[_completion(b) for b in _mutants(spec, cfg.n_incorrect, rng)],
    )


def generate_problems(cfg: SyntheticDataConfig) -> list[Problem]:
    """`cfg.n_problems` distinct problems; families rotate (problem i is of family i mod 5), templates are random.

    At most `cfg.n_correct` correct variants per problem (templates have 3–4) and up to `cfg.n_incorrect`
    distinct mutants (fewer only if a body admits no more).
    """
    by_family = {f: [t for t in TEMPLATES if t.family == f] for f in FAMILIES}
    problems, seen = [], set()
    for index in range(cfg.n_problems):
        family = FAMILIES[index % len(FAMILIES)]
        for attempt in range(_MAX_ATTEMPTS):
            rng = random.Random(f"{cfg.seed}:{index}:{attempt}")
            template = rng.choice(by_family[family])
            spec = template.build(rng)
            key = (spec.name, spec.params, spec.doc)
            if key not in seen:
                seen.add(key)
                break
        else:
            raise RuntimeError(f"family {family!r} has no new problem left after {_MAX_ATTEMPTS} attempts; "
                               f"lower n_problems={cfg.n_problems}")
        problems.append(_problem(index, template, spec, cfg))
    return problems


def label_program(problem: Problem, completion: str) -> str:
    """prompt + completion, then the hidden asserts: exit status 0 iff every test passes."""
    return problem.prompt + completion.rstrip("\n") + "\n\n" + "\n".join(problem.tests) + "\n"


def _label(problems: list[Problem], *, timeout_s: float = _LABEL_TIMEOUT_S) -> list[Record]:
    """Run every completion against its problem's tests; the label is the outcome. Ids: `{problem_id}/c0`, …"""
    jobs = [(p, text) for p in problems for text in p.correct + p.incorrect]
    results = run_many([label_program(p, text) for p, text in jobs], timeout_s=timeout_s,
                       memory_mb=_LABEL_MEMORY_MB, workers=_LABEL_WORKERS)
    records, counters = [], {}
    for (p, text), ok in zip(jobs, (r.ok for r in results)):
        tag = "c" if ok else "i"
        n = counters.get((p.problem_id, tag), 0)
        counters[(p.problem_id, tag)] = n + 1
        records.append(Record(
            id=f"{p.problem_id}/{tag}{n}", problem_id=p.problem_id, prompt=p.prompt, completion=text,
            is_correct=ok, source="synthetic", difficulty=p.difficulty, tests=p.tests, entry_point=p.entry_point,
        ))
    return records


def _split_sizes(n_problems: int, cfg: SyntheticDataConfig) -> tuple[int, int, int]:
    """(train, valid, test) problem counts; valid and test get at least one problem each."""
    n_valid = max(1, round(n_problems * cfg.valid_fraction))
    n_test = max(1, round(n_problems * cfg.test_fraction))
    return n_problems - n_valid - n_test, n_valid, n_test


def generate_splits(cfg: SyntheticDataConfig) -> dict[str, list[Record]]:
    """Labelled records split by problem into train / valid / test.

    Contiguous slices of the problem list: since families rotate, every split keeps the family mix.
    """
    n_train, n_valid, _ = _split_sizes(cfg.n_problems, cfg)
    if n_train < 1:
        raise ValueError(f"valid_fraction={cfg.valid_fraction} and test_fraction={cfg.test_fraction} leave no "
                         f"training problem out of n_problems={cfg.n_problems}")
    problems = generate_problems(cfg)
    split_of = {p.problem_id: ("train" if i < n_train else "valid" if i < n_train + n_valid else "test")
                for i, p in enumerate(problems)}
    splits: dict[str, list[Record]] = {"train": [], "valid": [], "test": []}
    for record in _label(problems):
        splits[split_of[record.problem_id]].append(record)
    return splits
