"""Correct bodies that several templates share, each in its stylistic variants (loop / generator / list): a
count, a sum and a collection over an iterable, with the template's own names and expressions filled in."""

from __future__ import annotations


def counted(var: str, iterable: str, cond: str) -> tuple[str, str, str]:
    """How many `var in iterable` satisfy `cond`: a counting loop, `sum(1 for ...)`, `len([...])`."""
    return (f"count = 0\nfor {var} in {iterable}:\n    if {cond}:\n        count += 1\nreturn count",
            f"return sum(1 for {var} in {iterable} if {cond})",
            f"return len([{var} for {var} in {iterable} if {cond}])")


def totalled(var: str, iterable: str, term: str, cond: str | None = None) -> tuple[str, str, str]:
    """The sum of `term` over `var in iterable` (those satisfying `cond`, if given): a summing loop, `sum` of a
    generator, `sum` of a list."""
    guard, where = (f"    if {cond}:\n    ", f" if {cond}") if cond else ("", "")
    return (f"total = 0\nfor {var} in {iterable}:\n{guard}    total += {term}\nreturn total",
            f"return sum({term} for {var} in {iterable}{where})",
            f"return sum([{term} for {var} in {iterable}{where}])")


def collected(var: str, iterable: str, item: str) -> tuple[str, str]:
    """The list of `item` for `var in iterable`: an appending loop, a list comprehension."""
    return (f"out = []\nfor {var} in {iterable}:\n    out.append({item})\nreturn out",
            f"return [{item} for {var} in {iterable}]")
