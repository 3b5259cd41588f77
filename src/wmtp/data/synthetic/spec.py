"""What a problem template is: a `Spec` (one random instance of a template) and a `Template` (how to draw one),
with the name pools and random values the templates draw from.

A template is data and a draw: its texts (candidate names, parameters, return type, description, correct bodies)
are `str.format` strings in its family's YAML file (`templates/<family>.yaml`); its draw function (in
`templates/<family>.py`) draws the values they are formatted with and the test inputs. `Template.build` is the
one engine that joins them, drawing from the RNG in a fixed order: the values, then the name, then the inputs.
"""

from __future__ import annotations

import random
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

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


Inputs = list[tuple[Any, ...]]
# A template's draw: from the RNG, the values its texts are formatted with, and a function that then draws its test
# inputs (called after the name is drawn; the first input is the docstring example).
Drawn = tuple[dict[str, Any], Callable[[], Inputs]]
Draw = Callable[[random.Random], Drawn]
TEXT_FIELDS = ("difficulty", "names", "params", "returns", "doc", "bodies")


@dataclass(frozen=True)
class Template:
    """A problem template: its name, family and difficulty, its texts (`TEXT_FIELDS` but difficulty: format
    strings, or a mapping from the draw's `variant` value to them) and its draw."""

    name: str
    family: str
    difficulty: str
    texts: Mapping[str, Any]
    draw: Draw

    def build(self, rng: random.Random) -> Spec:
        """One instance: the draw's values, then a name, then the test inputs. A sole candidate name is taken
        without a draw (`rng.choice` of one item would still consume random bits)."""
        values, inputs = self.draw(rng)

        def text(field: str) -> Any:
            value = self.texts[field]
            if isinstance(value, Mapping):
                value = value[values["variant"]]
            return value.format(**values) if isinstance(value, str) else tuple(v.format(**values) for v in value)

        names = text("names")
        name = names[0] if len(names) == 1 else rng.choice(names)
        return Spec(name, text("params"), text("returns"), text("doc"), text("bodies"), inputs())


def family(path: Path, *draws: Draw) -> tuple[Template, ...]:
    """The templates of the family file `path` (`<family>.yaml`, a mapping from template name to its texts), in
    the order of `draws`; a template is named after its draw function (`_add_k` draws `add_k`)."""
    texts = yaml.safe_load(path.read_text())
    named = {draw.__name__.removeprefix("_"): draw for draw in draws}
    if set(named) != set(texts):
        raise ValueError(f"{path.name}: templates {sorted(texts)} but draw functions for {sorted(named)}")
    for name, entry in texts.items():
        if set(entry) != set(TEXT_FIELDS):
            raise ValueError(f"{path.name}: template {name} has fields {sorted(entry)}; expected {list(TEXT_FIELDS)}")
    return tuple(Template(name, path.stem, texts[name]["difficulty"], texts[name], draw)
                 for name, draw in named.items())


def as_completion(body: str) -> str:
    """An unindented body as a completion: indented under the signature, ending in a newline."""
    return textwrap.indent(body, "    ") + "\n"


def rand_ints(rng: random.Random, lo_len: int, hi_len: int, lo: int = -9, hi: int = 9) -> list[int]:
    """A list of lo_len..hi_len random ints in [lo, hi]."""
    return [rng.randint(lo, hi) for _ in range(rng.randint(lo_len, hi_len))]


def rand_string(rng: random.Random, alphabet: str, lo_len: int, hi_len: int) -> str:
    """A string of lo_len..hi_len random characters of `alphabet`."""
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo_len, hi_len)))


def rand_sentence(rng: random.Random, lo_words: int, hi_words: int, sep: str = " ") -> str:
    """lo_words..hi_words random `WORDS` joined by `sep`."""
    return sep.join(rng.choice(WORDS) for _ in range(rng.randint(lo_words, hi_words)))
