"""String templates: counting, repeating, reordering and transforming characters and words."""

from __future__ import annotations

import random

from wmtp.data.synthetic.spec import LETTERS, STR_NAMES, WORDS, Spec, family, rand_sentence, rand_string
from wmtp.data.synthetic.templates.bodies import counted


def _count_char(rng: random.Random) -> Spec:
    c, s = rng.choice("aeioulnrst"), rng.choice(STR_NAMES)
    alphabet = c * 3 + "".join(rng.sample(LETTERS, 3))
    loop, gen, comprehension = counted("ch", s, f"ch == '{c}'")
    return Spec(
        rng.choice((f"count_{c}", f"count_{c}s", f"num_{c}")), f"{s}: str", "int",
        f"Return how many times '{c}' occurs in {s}.",
        (loop, f"return {s}.count('{c}')", gen, comprehension),
        [(rand_string(rng, alphabet, 2, 4) + c + rand_string(rng, alphabet, 2, 4),), ("",), (c * 3,),
         (rand_string(rng, alphabet, 8, 14),), ("xyz",)],
    )


def _repeat_chars(rng: random.Random) -> Spec:
    k, s = rng.randint(2, 4), rng.choice(STR_NAMES)
    return Spec(
        rng.choice((f"stutter_{k}", f"repeat_each_{k}", f"echo_chars_{k}")), f"{s}: str", "str",
        f"Return {s} with every character repeated {k} times.",
        (f"out = ''\nfor ch in {s}:\n    out += ch * {k}\nreturn out", f"return ''.join(ch * {k} for ch in {s})",
         f"return ''.join([ch * {k} for ch in {s}])"),
        [(rand_string(rng, LETTERS, 2, 4),), ("",), ("x",), ("a b",), (rand_string(rng, LETTERS, 3, 6),)],
    )


def _reverse_fields(rng: random.Random) -> Spec:
    sep, s = rng.choice((" ", ",", "-", ";", "/")), rng.choice(("s", "text", "line"))
    if sep == " ":
        name, doc = "reverse_words", f"Return the words of {s} (separated by single spaces) in reverse order."
    else:
        name = rng.choice(("reverse_fields", "flip_fields"))
        doc = f"Return the '{sep}'-separated fields of {s} in reverse order, joined by '{sep}'."
    return Spec(
        name, f"{s}: str", "str", doc,
        (f"return '{sep}'.join({s}.split('{sep}')[::-1])", f"return '{sep}'.join(reversed({s}.split('{sep}')))",
         f"out = []\nfor part in {s}.split('{sep}'):\n    out.insert(0, part)\nreturn '{sep}'.join(out)"),
        [(rand_sentence(rng, 3, 4, sep),), ("",), (rng.choice(WORDS),), (rand_sentence(rng, 2, 2, sep),),
         (rand_sentence(rng, 5, 6, sep),)],
    )


def _palindrome(rng: random.Random) -> Spec:
    fold, s = rng.random() < 0.5, rng.choice(STR_NAMES)
    word = rand_string(rng, "abc", 2, 3)
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
    return Spec(rng.choice(("is_palindrome", "reads_same_backwards", "is_mirror")), f"{s}: str", "bool", doc,
                 bodies, inputs)


def _acronym(rng: random.Random) -> Spec:
    sep, s = rng.choice(("", ".", "-")), rng.choice(("s", "text", "phrase"))
    joined = "" if not sep else f", joined by '{sep}'"
    return Spec(
        rng.choice(("acronym", "initials", "first_letters")), f"{s}: str", "str",
        f"Return the upper-cased first letters of the words of {s}{joined}.",
        (f"out = []\nfor w in {s}.split():\n    out.append(w[0].upper())\nreturn '{sep}'.join(out)",
         f"return '{sep}'.join(w[0].upper() for w in {s}.split())",
         f"return '{sep}'.join([w[0] for w in {s}.split()]).upper()"),
        [(rand_sentence(rng, 3, 4),), ("",), (rng.choice(WORDS),), ("  to be  ",), (rand_sentence(rng, 5, 6),)],
    )


def _caesar(rng: random.Random) -> Spec:
    k, s = rng.randint(1, 25), rng.choice(STR_NAMES)
    return Spec(
        rng.choice((f"caesar_{k}", f"shift_letters_{k}", f"rotate_{k}")), f"{s}: str", "str",
        f"Return {s} with every lowercase letter shifted {k} places forward in the alphabet (z wraps to a); "
        "other characters are unchanged.",
        (f"out = ''\nfor ch in {s}:\n    if 'a' <= ch <= 'z':\n        out += chr((ord(ch) - 97 + {k}) % 26 + 97)\n"
         f"    else:\n        out += ch\nreturn out",
         f"return ''.join(chr((ord(ch) - ord('a') + {k}) % 26 + ord('a')) if 'a' <= ch <= 'z' else ch for ch in {s})",
         f"letters = 'abcdefghijklmnopqrstuvwxyz'\nout = []\nfor ch in {s}:\n    if ch in letters:\n"
         f"        out.append(letters[(letters.index(ch) + {k}) % 26])\n    else:\n        out.append(ch)\n"
         "return ''.join(out)"),
        [(rand_string(rng, LETTERS, 4, 6),), ("",), ("xyz",), ("a-z!",), ("Zebra",), (rand_sentence(rng, 2, 3),)],
    )


TEMPLATES = family(
    "strings",
    (_count_char, "easy"), (_repeat_chars, "easy"), (_reverse_fields, "medium"), (_palindrome, "medium"),
    (_acronym, "medium"), (_caesar, "hard"),
)
