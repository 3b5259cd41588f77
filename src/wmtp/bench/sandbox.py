"""Sandbox benchmark: what bubblewrap isolation costs per execution, against unsafe mode.

Both modes run the same trivial program (``pass``) under the same rlimits, timeout and output capture, so the
difference is bwrap's namespaces and mounts plus the launcher shell:
    latency     n sequential ``run_python`` calls, wall seconds per call (mean, median, p95, min)
    throughput  one ``run_many`` over n jobs with ``workers`` threads, executions per second
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
from typing import Any

from wmtp.eval.sandbox import run_many, run_python

PROGRAM = "pass"


def bench_sandbox(n: int = 50, *, workers: int | None = None) -> dict[str, Any]:
    """Latency and throughput of sandboxed vs unsafe execution; a JSON-able dict.

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
    return {
        "n": n,
        "workers": workers,
        "program": PROGRAM,
        **modes,
        "latency_overhead_ms": sandboxed["latency_ms"]["median"] - unsafe["latency_ms"]["median"],
        "throughput_ratio": sandboxed["throughput_per_s"] / unsafe["throughput_per_s"],
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
