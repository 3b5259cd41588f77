"""Minimal test runner: does a program pass its asserts? Used to label synthetic solutions.

Each program runs in a fresh interpreter, `python -I -S` (isolated: no user site, no PYTHONPATH; no `site`, which
is a third of start-up time and which stdlib-only programs do not need), in its own session and an empty
temporary working directory, output discarded. This is not a sandbox: it is for code we generate ourselves
(a later issue replaces it with bubblewrap, DESIGN §8).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor


def run_tests(code: str, tests: list[str], *, timeout_s: float = 5.0) -> bool:
    """True iff `code` followed by the `tests` (assert statements) exits with status 0 within `timeout_s`."""
    program = code.rstrip("\n") + "\n\n" + "\n".join(tests) + "\n"
    with tempfile.TemporaryDirectory(prefix="wmtp-run-") as tmp:
        # The program comes on stdin (`-`): no file to write, no argument-length limit.
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-"],
            cwd=tmp,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # own process group: the timeout kills whatever the program started
        )
        try:
            proc.communicate(program.encode("utf-8"), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return False
        return proc.returncode == 0


def run_many(
    jobs: list[tuple[str, list[str]]], *, timeout_s: float = 5.0, workers: int | None = None
) -> list[bool]:
    """`run_tests` for every (code, tests) job, at most `workers` at a time; results in job order.

    Default workers: twice the CPU count. A thread only waits on its subprocess, and having more jobs in
    flight than cores hides each one's spawn latency.
    """
    workers = workers or 2 * (os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: run_tests(job[0], job[1], timeout_s=timeout_s), jobs))
