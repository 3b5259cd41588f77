"""The benchmark table: every benchmark module of this package and its :class:`Benchmark`, by name.

A benchmark is one module ``wmtp/eval/benchmarks/<name>.py`` that defines ``BENCHMARK``: every module of this
package that does is a ``wmtp eval`` / ``wmtp label`` benchmark, found by name (:data:`MODULES`, sorted), so adding
a benchmark is adding its file. The package's other modules (base, rows, harness, registry) define none.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from importlib import import_module
from typing import Any

import wmtp.eval.benchmarks as package
from wmtp.eval.benchmarks.base import Benchmark
from wmtp.eval.benchmarks.harness import grade_problems

_MODULES = {info.name: import_module(f"{package.__name__}.{info.name}") for info in pkgutil.iter_modules(package.__path__)
            if info.name != "registry"}
MODULES = tuple(sorted(name for name, module in _MODULES.items() if hasattr(module, "BENCHMARK")))

BENCHMARKS: dict[str, Benchmark] = {_MODULES[name].BENCHMARK.name: _MODULES[name].BENCHMARK for name in MODULES}


def grade(
    bench: str,
    rows: Sequence[Mapping[str, Any]],
    completions: Sequence[Sequence[str]],
    *,
    unsafe: bool = False,
    workers: int | None = None,
) -> list[list[bool]]:
    """Grade completions of a benchmark's published rows: ``completions[i]`` are the completions of ``rows[i]``
    (a row as the benchmark's data file holds it); passed[i][j] is completion j of row i, graded as `wmtp eval`
    grades it. Code runs with the benchmark's own limits, in the sandbox unless ``unsafe`` (no isolation: see
    `sandbox.run_python`), ``workers`` programs at a time (default: one per core).

    Raises:
        ValueError: ``bench`` is not in the table, or it is not graded from completions (HellaSwag).
        DataError: a row lacks what the benchmark needs.
    """
    if bench not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {bench!r}; choose from {', '.join(BENCHMARKS)}")
    benchmark = BENCHMARKS[bench]
    if benchmark.from_rows is None:
        raise ValueError(f"{bench} rows are not graded from completions")
    limits = None if benchmark.sandbox is None else replace(benchmark.sandbox, unsafe=unsafe, workers=workers)
    return grade_problems(benchmark, benchmark.from_rows(rows), completions, sandbox=limits)
