"""The program that grades a completion of an embedded-task problem: labelling and evaluation both run it."""

from __future__ import annotations

from collections.abc import Sequence


def check_program(prompt: str, completion: str, tests: Sequence[str]) -> str:
    """The prompt, the completion as written, then the hidden asserts a line each: exit 0 iff every test passes.

    human-eval's layout (``prompt + completion + "\\n" + test``), with the asserts as the test. The asserts call
    the function by name, so no ``check(entry_point)`` follows them.
    """
    return prompt + completion + "\n" + "\n".join(tests) + "\n"
