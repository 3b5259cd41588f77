"""String templates: counting, repeating, reordering and transforming characters and words (texts:
`strings.yaml`)."""

from __future__ import annotations

import random
from pathlib import Path

from wmtp.data.synthetic.spec import LETTERS, STR_NAMES, WORDS, Drawn, family, rand_sentence, rand_string
from wmtp.data.synthetic.templates.bodies import counted


def _count_char(rng: random.Random) -> Drawn:
    c, s = rng.choice("aeioulnrst"), rng.choice(STR_NAMES)
    alphabet = c * 3 + "".join(rng.sample(LETTERS, 3))
    loop, generator, listed = counted("ch", s, f"ch == '{c}'")
    return {"c": c, "s": s, "loop": loop, "generator": generator, "listed": listed}, lambda: [
        (rand_string(rng, alphabet, 2, 4) + c + rand_string(rng, alphabet, 2, 4),), ("",), (c * 3,),
        (rand_string(rng, alphabet, 8, 14),), ("xyz",)]


def _repeat_chars(rng: random.Random) -> Drawn:
    k, s = rng.randint(2, 4), rng.choice(STR_NAMES)
    return {"k": k, "s": s}, lambda: [
        (rand_string(rng, LETTERS, 2, 4),), ("",), ("x",), ("a b",), (rand_string(rng, LETTERS, 3, 6),)]


def _reverse_fields(rng: random.Random) -> Drawn:
    sep, s = rng.choice((" ", ",", "-", ";", "/")), rng.choice(("s", "text", "line"))
    return {"variant": "words" if sep == " " else "fields", "sep": sep, "s": s}, lambda: [
        (rand_sentence(rng, 3, 4, sep),), ("",), (rng.choice(WORDS),), (rand_sentence(rng, 2, 2, sep),),
        (rand_sentence(rng, 5, 6, sep),)]


def _palindrome(rng: random.Random) -> Drawn:
    fold, s = rng.random() < 0.5, rng.choice(STR_NAMES)
    word = rand_string(rng, "abc", 2, 3)
    if fold:
        inputs = [("Level",), ("",), ("a",), (word + word[::-1].upper(),), ("abca",), ("Noon",), (word + "x",)]
    else:
        inputs = [("level",), ("",), ("a",), (word + word[::-1],), ("abca",), ("Aba",), (word + "x" + word[::-1],)]
    return {"variant": "fold" if fold else "exact", "s": s}, lambda: inputs


def _acronym(rng: random.Random) -> Drawn:
    sep, s = rng.choice(("", ".", "-")), rng.choice(("s", "text", "phrase"))
    joined = "" if not sep else f", joined by '{sep}'"
    return {"sep": sep, "s": s, "joined": joined}, lambda: [
        (rand_sentence(rng, 3, 4),), ("",), (rng.choice(WORDS),), ("  to be  ",), (rand_sentence(rng, 5, 6),)]


def _caesar(rng: random.Random) -> Drawn:
    k, s = rng.randint(1, 25), rng.choice(STR_NAMES)
    return {"k": k, "s": s}, lambda: [
        (rand_string(rng, LETTERS, 4, 6),), ("",), ("xyz",), ("a-z!",), ("Zebra",), (rand_sentence(rng, 2, 3),)]


TEMPLATES = family(Path(__file__).with_suffix(".yaml"), _count_char, _repeat_chars, _reverse_fields, _palindrome,
                   _acronym, _caesar)
