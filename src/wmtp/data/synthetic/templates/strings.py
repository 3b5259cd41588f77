"""String templates: counting, repeating, reordering and transforming characters and words."""

from __future__ import annotations

import random

from wmtp.data.synthetic.spec import (
    LETTERS,
    STR_NAMES,
    WORDS,
    Spec,
    code,
    family,
    rand_sentence,
    rand_string,
)
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
        (code(f"""
             out = ''
             for ch in {s}:
                 out += ch * {k}
             return out
             """),
         f"return ''.join(ch * {k} for ch in {s})",
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
         code(f"""
             out = []
             for part in {s}.split('{sep}'):
                 out.insert(0, part)
             return '{sep}'.join(out)
             """)),
        [(rand_sentence(rng, 3, 4, sep),), ("",), (rng.choice(WORDS),), (rand_sentence(rng, 2, 2, sep),),
         (rand_sentence(rng, 5, 6, sep),)],
    )


def _palindrome(rng: random.Random) -> Spec:
    fold, s = rng.random() < 0.5, rng.choice(STR_NAMES)
    word = rand_string(rng, "abc", 2, 3)
    if fold:
        doc = f"Return True if {s} reads the same forwards and backwards, ignoring case."
        bodies = (code(f"""
                      t = {s}.lower()
                      return t == t[::-1]
                      """),
                  f"return {s}.lower() == {s}[::-1].lower()",
                  code(f"""
                      t = {s}.lower()
                      for i in range(len(t) // 2):
                          if t[i] != t[-1 - i]:
                              return False
                      return True
                      """))
        inputs = [("Level",), ("",), ("a",), (word + word[::-1].upper(),), ("abca",), ("Noon",), (word + "x",)]
    else:
        doc = f"Return True if {s} reads the same forwards and backwards."
        bodies = (f"return {s} == {s}[::-1]", f"return list({s}) == list(reversed({s}))",
                  code(f"""
                      for i in range(len({s}) // 2):
                          if {s}[i] != {s}[-1 - i]:
                              return False
                      return True
                      """))
        inputs = [("level",), ("",), ("a",), (word + word[::-1],), ("abca",), ("Aba",), (word + "x" + word[::-1],)]
    return Spec(rng.choice(("is_palindrome", "reads_same_backwards", "is_mirror")), f"{s}: str", "bool", doc,
                 bodies, inputs)


def _acronym(rng: random.Random) -> Spec:
    sep, s = rng.choice(("", ".", "-")), rng.choice(("s", "text", "phrase"))
    joined = "" if not sep else f", joined by '{sep}'"
    return Spec(
        rng.choice(("acronym", "initials", "first_letters")), f"{s}: str", "str",
        f"Return the upper-cased first letters of the words of {s}{joined}.",
        (code(f"""
             out = []
             for w in {s}.split():
                 out.append(w[0].upper())
             return '{sep}'.join(out)
             """),
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
        (code(f"""
             out = ''
             for ch in {s}:
                 if 'a' <= ch <= 'z':
                     out += chr((ord(ch) - 97 + {k}) % 26 + 97)
                 else:
                     out += ch
             return out
             """),
         f"return ''.join(chr((ord(ch) - ord('a') + {k}) % 26 + ord('a')) if 'a' <= ch <= 'z' else ch for ch in {s})",
         code(f"""
             letters = 'abcdefghijklmnopqrstuvwxyz'
             out = []
             for ch in {s}:
                 if ch in letters:
                     out.append(letters[(letters.index(ch) + {k}) % 26])
                 else:
                     out.append(ch)
             return ''.join(out)
             """)),
        [(rand_string(rng, LETTERS, 4, 6),), ("",), ("xyz",), ("a-z!",), ("Zebra",), (rand_sentence(rng, 2, 3),)],
    )


TEMPLATES = family(
    "strings",
    (_count_char, "easy"), (_repeat_chars, "easy"), (_reverse_fields, "medium"), (_palindrome, "medium"),
    (_acronym, "medium"), (_caesar, "hard"),
)
