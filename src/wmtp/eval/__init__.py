"""Evaluation: the benchmark table (`wmtp.eval.benchmarks`), sandboxed execution, generation, pass@k.

``grade(bench, rows, completions, *, unsafe=False, workers=None) -> list[list[bool]]`` grades completions of a
benchmark's published rows (:func:`wmtp.eval.benchmarks.registry.grade`). It is imported on first use: importing the sandbox or pass@k
(as the data and analysis code do) must not load every benchmark, nor import back into the modules that
import those.
"""

from __future__ import annotations

from typing import Any

__all__ = ["grade"]


def __getattr__(name: str) -> Any:
    if name == "grade":
        from wmtp.eval.benchmarks.registry import grade

        return grade
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
