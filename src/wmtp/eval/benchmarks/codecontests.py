"""CodeContests (Li et al., 2022, AlphaCode): competitive programming, graded on stdin/stdout tests.

Data: the test or valid split as a local parquet/jsonl in the hub schema, or the hub dataset
``deepmind/code_contests`` (split ``test`` by default). A row has ``name``, ``description``,
``public_tests`` / ``private_tests`` / ``generated_tests`` (each ``{"input": [...], "output": [...]}``),
``time_limit`` (``{"seconds", "nanos"}`` or null) and ``memory_limit_bytes``.

Prompt: the statement, then a request for a Python 3 program reading stdin, and an open code fence;
stop: the closing fence. Grade: the completion runs once per test (public, then private, then generated)
with the test's input on stdin; it passes if every run exits 0 in time and its output matches the expected one
as DeepMind's official checker decides (:func:`outputs_match`: whitespace-separated tokens, ASCII case ignored,
numbers within 1e-5). A sample stops at its first failing test.

Limits per problem: wall time ``time_limit * time_scale + startup_s`` (the row's limit is for the judged
program; ``startup_s`` pays for the sandbox and the interpreter's start), memory the row's limit but at least
``min_memory_mb`` (RLIMIT_AS counts the interpreter's virtual memory, which is far above what it uses).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wmtp.data.records import DataError
from wmtp.eval.benchmarks.base import Benchmark, Check, Problem, SandboxSettings, load_with
from wmtp.eval.benchmarks.rows import rows_from

STOP = ("```",)
TEST_KINDS = ("public_tests", "private_tests", "generated_tests")
DEFAULT_TIME_LIMIT_S = 10.0  # rows without a time limit
INSTRUCTION = (
    "Write a Python 3 program that solves the problem above. It reads the input from standard input and "
    "writes the answer to standard output."
)


@dataclass(frozen=True)
class Limits:
    """How a row's limits become sandbox limits."""

    time_scale: float = 1.0
    startup_s: float = 1.0
    min_memory_mb: int = 512

    def timeout_s(self, time_limit_s: float) -> float:
        return time_limit_s * self.time_scale + self.startup_s

    def memory_mb(self, memory_limit_bytes: int | None) -> int:
        return max(self.min_memory_mb, math.ceil((memory_limit_bytes or 0) / 2**20))


LIMITS = Limits()


@dataclass(frozen=True)
class Contest:
    """One CodeContests problem: statement, its stdin/stdout tests, its limits."""

    name: str
    description: str
    tests: tuple[tuple[str, str], ...]  # (input, expected output), public then private then generated
    time_limit_s: float
    memory_limit_bytes: int | None


def time_limit_seconds(value: Mapping[str, Any] | None) -> float:
    """``{"seconds": s, "nanos": n}`` → s + n·1e-9 seconds; missing or zero → :data:`DEFAULT_TIME_LIMIT_S`."""
    if not value:
        return DEFAULT_TIME_LIMIT_S
    seconds = (value.get("seconds") or 0) + (value.get("nanos") or 0) * 1e-9
    return seconds if seconds > 0 else DEFAULT_TIME_LIMIT_S


def parse_contest(row: Mapping[str, Any]) -> Contest:
    try:
        tests = []
        for kind in TEST_KINDS:
            group = row.get(kind) or {"input": [], "output": []}
            if len(group["input"]) != len(group["output"]):
                raise ValueError(f"{kind} has {len(group['input'])} inputs but {len(group['output'])} outputs")
            tests.extend(zip(group["input"], group["output"]))
        return Contest(
            name=str(row["name"]),
            description=row["description"],
            tests=tuple(tests),
            time_limit_s=time_limit_seconds(row.get("time_limit")),
            memory_limit_bytes=row.get("memory_limit_bytes"),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"codecontests: bad row {row.get('name', '?')!r}: {err!r}") from None


def prompt(contest: Contest) -> str:
    return f"{contest.description.strip()}\n\n{INSTRUCTION}\n\n```python\n"


def load_codecontests(
    data_file: str | Path | None = None, *, dataset: str | None = None, split: str | None = "test"
) -> list[Problem]:
    """Problems with at least one test, in data order (a problem without tests cannot be graded)."""
    rows = rows_from(data_file=data_file, dataset=dataset, split=split or "test", benchmark="codecontests")
    contests = [c for c in map(parse_contest, rows) if c.tests]
    if not contests:
        raise DataError("codecontests: no problem with tests in the data")
    return [problem(c) for c in contests]


def problem(contest: Contest) -> Problem:
    info = {"n_tests": len(contest.tests), "time_limit_s": contest.time_limit_s}
    return Problem(contest.name, prompt(contest), info=info, data=contest)


def problems_of(rows: Sequence[Mapping[str, Any]]) -> list[Problem]:
    """One problem per row, in row order; a row without tests cannot be graded."""
    contests = list(map(parse_contest, rows))
    untested = [c.name for c in contests if not c.tests]
    if untested:
        raise DataError(f"codecontests: no tests to grade {untested[:3]}")
    return [problem(c) for c in contests]


# The official checker: google-deepmind/code_contests, execution/tester_sandboxer.cc (OutputsMatch,
# SplitAndLowercase, ValuesMatch; commit fa7a4f8). Its facts, restated: tokens split on any run of
# " \n\t\r\v", lowercased (ASCII); equal token lists match; otherwise the lists must be as long and every
# pair match: two numbers (absl::SimpleAtod parses both; an integer parses too) if |a - b| < 1e-5, absolute
# and strict, anything else only if equal.
_SEPARATORS = re.compile(r"[ \n\t\r\v]+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|[+-]?(?:inf|infinity|nan)")  # SimpleAtod's syntax
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
FLOAT_TOLERANCE = 1e-5


def tokens(text: str) -> list[str]:
    """The official checker's SplitAndLowercase: whitespace-separated tokens, ASCII letters lowercased."""
    return [t.translate(_ASCII_LOWER) for t in _SEPARATORS.split(text) if t]


def values_match(a: str, b: str) -> bool:
    """The official ValuesMatch of two tokens: numbers within :data:`FLOAT_TOLERANCE`, other tokens equal
    (so, as there, ``inf`` matches ``inf`` only through the whole-list comparison)."""
    if not (_NUMBER.fullmatch(a) and _NUMBER.fullmatch(b)):
        return a == b
    return abs(float(a) - float(b)) < FLOAT_TOLERANCE


def outputs_match(output: str, expected: str) -> bool:
    """Whether a program's stdout matches the expected output, as CodeContests' official ``OutputsMatch``:
    ``YES``/``yes``, ``0.500000``/``0.5`` and ``1 2 3``/``1\n2\n3`` match; ``1 2``/``1 2 3`` do not."""
    got, want = tokens(output), tokens(expected)
    if got == want:
        return True
    return len(got) == len(want) and all(values_match(a, b) for a, b in zip(got, want))


def contest_checks(contest: Contest, completion: str, *, limits: Limits = LIMITS) -> list[Check]:
    """One sandboxed run per test: the completion with the test's input on stdin."""
    timeout_s, memory_mb = limits.timeout_s(contest.time_limit_s), limits.memory_mb(contest.memory_limit_bytes)
    return [Check(completion, stdin=stdin, expected_stdout=expected, timeout_s=timeout_s, memory_mb=memory_mb,
                  outputs_match=outputs_match)
            for stdin, expected in contest.tests]


BENCHMARK = Benchmark(
    name="codecontests", load=load_with(load_codecontests), from_rows=problems_of, stop=STOP,
    checks=lambda p, completion, sandbox: contest_checks(p.data, completion),
    # The runs take their limits from the row (LIMITS); the recorded settings say how.
    sandbox=SandboxSettings(timeout_s=math.nan, memory_mb=LIMITS.min_memory_mb),
    sandbox_notes={
        "timeout_s": "per problem: time_limit * time_scale + startup_s",
        "memory_mb": f"per problem: max(memory_limit_bytes, {LIMITS.min_memory_mb} MiB)",
        "time_scale": LIMITS.time_scale,
        "startup_s": LIMITS.startup_s,
        "default_time_limit_s": DEFAULT_TIME_LIMIT_S,
        "output_comparison": "official checker (code_contests tester_sandboxer.cc OutputsMatch): whitespace "
                             "tokens, ASCII case-insensitive, numbers within 1e-5 absolute",
    },
)
