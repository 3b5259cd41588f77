"""Sandbox benchmark: what bubblewrap isolation costs per execution, against unsafe mode.

Both modes run the same trivial program (``pass``) under the same rlimits, timeout and output capture, so the
difference is bwrap's namespaces and mounts plus the launcher shell:
    latency     n sequential ``run_python`` calls, wall seconds per call (mean, median, p95, min)
    throughput  one ``run_many`` over n jobs with ``workers`` threads, executions per second
Then, sandboxed only, a real workload: all 164 HumanEval canonical solutions with their tests, as one
``run_many`` (wall seconds, programs per second, how many passed).
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
from typing import Any

from wmtp.eval.sandbox import run_many, run_python

PROGRAM = "pass"


def bench_sandbox(n: int = 50, *, workers: int | None = None, humaneval: bool = True) -> dict[str, Any]:
    """Latency and throughput of sandboxed vs unsafe execution (and, with ``humaneval``, the wall time of the
    164 HumanEval canonical solutions); a JSON-able dict.

    Raises:
        SandboxUnavailable: bwrap is missing (the sandboxed half cannot run).
        ValueError: n < 1.
    """
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    workers = workers or os.cpu_count() or 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # unsafe mode warns on every call, by design
        modes = {name: _measure(n, workers=workers, unsafe=unsafe)
                 for name, unsafe in (("sandboxed", False), ("unsafe", True))}
    sandboxed, unsafe = modes["sandboxed"], modes["unsafe"]
    result = {
        "n": n,
        "workers": workers,
        "program": PROGRAM,
        **modes,
        "latency_overhead_ms": sandboxed["latency_ms"]["median"] - unsafe["latency_ms"]["median"],
        "throughput_ratio": sandboxed["throughput_per_s"] / unsafe["throughput_per_s"],
    }
    if humaneval:
        result["humaneval_canonical"] = bench_humaneval_canonical(workers=workers)
    return result


def bench_humaneval_canonical(*, workers: int) -> dict[str, Any]:
    """All HumanEval canonical solutions (prompt + solution + tests) through the sandbox at once."""
    from wmtp.eval.benchmarks.humaneval import load_humaneval, program

    programs = [program(p, p.data["canonical_solution"]) for p in load_humaneval()]  # the package's data
    start = time.perf_counter()
    results = run_many(programs, workers=workers, timeout_s=10.0)
    wall_s = time.perf_counter() - start
    return {
        "n": len(programs),
        "passed": sum(r.ok for r in results),
        "wall_s": wall_s,
        "programs_per_s": len(programs) / wall_s,
    }


def _measure(n: int, *, workers: int, unsafe: bool) -> dict[str, Any]:
    """Latency of n sequential runs and throughput of n parallel runs in one mode."""
    run_python(PROGRAM, unsafe=unsafe)  # warm-up: page cache, first-call imports
    latencies_ms = []
    for _ in range(n):
        start = time.perf_counter()
        result = run_python(PROGRAM, unsafe=unsafe)
        latencies_ms.append((time.perf_counter() - start) * 1e3)
        _check(result.ok, unsafe)
    start = time.perf_counter()
    results = run_many([PROGRAM] * n, workers=workers, unsafe=unsafe)
    elapsed = time.perf_counter() - start
    _check(all(r.ok for r in results), unsafe)
    ordered = sorted(latencies_ms)
    return {
        "latency_ms": {
            "mean": statistics.fmean(ordered),
            "median": statistics.median(ordered),
            "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
            "min": ordered[0],
        },
        "throughput_per_s": n / elapsed,
    }


def _check(ok: bool, unsafe: bool) -> None:
    """A benchmark of failing runs would time the wrong thing."""
    if not ok:
        raise RuntimeError(f"the trivial program failed (unsafe={unsafe}); the numbers would be meaningless")
