"""What a problem template is: a `Spec` (one random instance of a template) and a `Template` (how to draw one),
with the name pools and random values the templates draw from and `code`, how they write a multi-line body."""

from __future__ import annotations

import random
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

INT_NAMES = ("n", "x", "value", "num")
LIST_NAMES = ("xs", "nums", "values", "items")
STR_NAMES = ("s", "text", "word")
LETTERS = "abcdefghijklmnopqrstuvwxyz"
WORDS = ("apple", "bird", "code", "data", "echo", "fish", "gate", "hill", "iron", "jazz", "kite", "lamp", "moon",
         "nest", "oak", "pear", "quiz", "rain", "sun", "tree")


@dataclass(frozen=True)
class Spec:
    """What a template instance says: the function, its correct bodies (unindented; the first is canonical) and
    the argument tuples the tests call it with (the first is the docstring example)."""

    name: str
    params: str
    returns: str
    doc: str
    bodies: tuple[str, ...]
    inputs: list[tuple[Any, ...]]

    def source(self, body: str) -> str:
        """The function's source with this (unindented) body."""
        return f"def {self.name}({self.params}) -> {self.returns}:\n{as_completion(body)}"

    def call(self, args: tuple[Any, ...]) -> str:
        """The source of a call of the function with these arguments."""
        return f"{self.name}({', '.join(repr(a) for a in args)})"


@dataclass(frozen=True)
class Template:
    """A problem template: its name, family and difficulty, and `build`, which draws one `Spec` from the RNG."""

    name: str
    family: str
    difficulty: str
    build: Callable[[random.Random], Spec]


def family(name: str, *templates: tuple[Callable[[random.Random], Spec], str]) -> tuple[Template, ...]:
    """A family's templates from (build function, difficulty) pairs, in order; a template is named after its
    build function (`_add_k` builds `add_k`)."""
    return tuple(Template(build.__name__.removeprefix("_"), name, difficulty, build) for build, difficulty in templates)


def as_completion(body: str) -> str:
    """An unindented body as a completion: indented under the signature, ending in a newline."""
    return textwrap.indent(body, "    ") + "\n"


def code(block: str) -> str:
    """A body written as an indented triple-quoted block: dedented, without the line breaks after the opening
    and before the closing quotes."""
    return textwrap.dedent(block).strip("\n")


def rand_ints(rng: random.Random, lo_len: int, hi_len: int, lo: int = -9, hi: int = 9) -> list[int]:
    """A list of lo_len..hi_len random ints in [lo, hi]."""
    return [rng.randint(lo, hi) for _ in range(rng.randint(lo_len, hi_len))]


def rand_string(rng: random.Random, alphabet: str, lo_len: int, hi_len: int) -> str:
    """A string of lo_len..hi_len random characters of `alphabet`."""
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo_len, hi_len)))


def rand_sentence(rng: random.Random, lo_words: int, hi_words: int, sep: str = " ") -> str:
    """lo_words..hi_words random `WORDS` joined by `sep`."""
    return sep.join(rng.choice(WORDS) for _ in range(rng.randint(lo_words, hi_words)))
