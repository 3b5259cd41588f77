"""What every generative benchmark shares: sample → grade → pass@k, the sandbox grading engine, row loaders.

A benchmark module turns its data into :class:`Problem` s (an id, the prompt the model sees, what the grader
needs), names its stop strings, and grades completions one of two ways:

- in the sandbox (code): each completion becomes a list of :class:`Check` s (a program, its stdin and, for
  stdin/stdout tasks, the expected output); :func:`grade_in_sandbox` runs them on a bounded pool;
- in-process (math): :func:`grade_each` applies a pure ``(problem, completion) -> bool``.

:func:`evaluate_generative` then generates, grades and builds the result dict every benchmark returns::

    {"benchmark", "summary": {"pass@k": ...}, "n_problems", "sampling", "sandbox" (sandboxed ones only),
     "per_problem": [{"problem_id", ...info, "n", "c", "passed": [bool per sample], "sample", ...details}]}

``per_problem`` keeps the benchmark's order and ids, so two runs' results can be paired by problem.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import Progress

from wmtp.data.records import DataError
from wmtp.eval.generate import SamplingConfig, generate
from wmtp.eval.passk import pass_at_k_table
from wmtp.eval.sandbox import PYTHON, ExecResult, SandboxUnavailable, run_python

# One program per core. More in flight would run short programs faster (a sandboxed run mostly waits on
# namespace setup and teardown), but slow correct programs would then share cores and miss their wall-clock
# timeout: grading must not depend on how busy the machine is.
DEFAULT_WORKERS = os.cpu_count() or 1

Grader = Callable[[Sequence["Problem"], Sequence[Sequence[str]]], list[list[bool]]]


@dataclass(frozen=True)
class Problem:
    """One benchmark problem.

    Attributes:
        problem_id: stable id (the benchmark's own: ``HumanEval/0``, MBPP task id, ...), used to pair runs.
        prompt: exactly the text the model continues.
        info: JSON-able fields copied into the problem's ``per_problem`` entry (difficulty, subject, ...).
        data: whatever the grader needs (tests, reference answer); not reported.
    """

    problem_id: str
    prompt: str
    info: Mapping[str, Any] = field(default_factory=dict)
    data: Any = None


@dataclass(frozen=True)
class Check:
    """One sandboxed run of a completion. It passes if the program exits 0 within ``timeout_s`` and, when
    ``expected_stdout`` is set, its stdout equals it after :func:`normalize_output` on both sides."""

    code: str
    stdin: str = ""
    expected_stdout: str | None = None
    timeout_s: float = 10.0
    memory_mb: int = 1024


@dataclass(frozen=True)
class SandboxSettings:
    """How sandboxed benchmarks run programs; recorded in the result JSON."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    unsafe: bool = False
    workers: int | None = None

    def as_dict(self, **extra: Any) -> dict[str, Any]:
        return {
            **asdict(self),
            "workers": self.workers or DEFAULT_WORKERS,
            "isolation": "none (unsafe)" if self.unsafe else "bubblewrap",
            "python": PYTHON,
            **extra,
        }


# --- grading -----------------------------------------------------------------------------------------------


def normalize_output(text: str) -> str:
    """stdout as compared: CRLF → LF, trailing whitespace of every line and trailing blank lines dropped."""
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).rstrip("\n")


def check_passes(check: Check, result: ExecResult) -> bool:
    """Whether a finished run satisfies its check (a truncated stdout never matches)."""
    if not result.ok:
        return False
    if check.expected_stdout is None:
        return True
    return not result.truncated and normalize_output(result.stdout) == normalize_output(check.expected_stdout)


def run_checks(
    samples: Sequence[Sequence[Check]],
    *,
    unsafe: bool = False,
    workers: int | None = None,
    progress: bool = False,
) -> list[bool]:
    """Whether every check of each sample passes.

    A sample's checks run in order and stop at the first failure (a wrong program is usually wrong on its
    first tests, so stdin/stdout benchmarks with hundreds of tests stay affordable). Samples run in parallel
    on a bounded thread pool of ``workers`` (default :data:`DEFAULT_WORKERS`; each thread only waits on its
    sandbox); identical samples run once.

    Raises:
        SandboxUnavailable: bwrap is missing (and not ``unsafe``) or cannot create the sandbox.
    """
    unique = list(dict.fromkeys(tuple(s) for s in samples))

    def run_sample(checks: tuple[Check, ...]) -> bool:
        for check in checks:
            result = run_python(check.code, stdin=check.stdin, timeout_s=check.timeout_s,
                                memory_mb=check.memory_mb, unsafe=unsafe)
            if not check_passes(check, result):
                return False
        return True

    outcome: dict[tuple[Check, ...], bool] = {}
    with ThreadPoolExecutor(max_workers=workers or DEFAULT_WORKERS) as pool, \
            Progress(disable=not progress) as bar:
        task = bar.add_task("grade", total=len(unique))
        futures = {checks: pool.submit(run_sample, checks) for checks in unique}
        for checks, future in futures.items():
            outcome[checks] = future.result()  # re-raises SandboxUnavailable from the worker
            bar.update(task, advance=1)
    return [outcome[tuple(s)] for s in samples]


def grade_in_sandbox(
    problems: Sequence[Problem],
    completions: Sequence[Sequence[str]],
    checks: Callable[[Problem, str], list[Check]],
    *,
    unsafe: bool = False,
    workers: int | None = None,
    progress: bool = False,
) -> list[list[bool]]:
    """passed[i][j]: completion j of problem i passes all of ``checks(problem, completion)``."""
    samples = [checks(p, c) for p, cs in zip(problems, completions, strict=True) for c in cs]
    flat = iter(run_checks(samples, unsafe=unsafe, workers=workers, progress=progress))
    return [[next(flat) for _ in cs] for cs in completions]


def grade_programs(
    problems: Sequence[Problem],
    completions: Sequence[Sequence[str]],
    program: Callable[[Problem, str], str],
    *,
    sandbox: SandboxSettings,
    progress: bool = False,
) -> list[list[bool]]:
    """passed[i][j]: ``program(problem i, completion j)`` exits 0 within the sandbox's limits (assert-graded
    benchmarks: the program is the completion followed by its tests)."""
    def checks(p: Problem, completion: str) -> list[Check]:
        return [Check(program(p, completion), timeout_s=sandbox.timeout_s, memory_mb=sandbox.memory_mb)]

    return grade_in_sandbox(problems, completions, checks, unsafe=sandbox.unsafe, workers=sandbox.workers,
                            progress=progress)


def grade_each(
    problems: Sequence[Problem], completions: Sequence[Sequence[str]], is_correct: Callable[[Problem, str], bool]
) -> list[list[bool]]:
    """passed[i][j] = is_correct(problem i, completion j), in-process (for graders that run no code)."""
    return [[is_correct(p, c) for c in cs] for p, cs in zip(problems, completions, strict=True)]


def preflight_sandbox(*, unsafe: bool) -> None:
    """Fail fast, before minutes of generation, when the sandbox cannot run here."""
    result = run_python("pass", timeout_s=10.0, unsafe=unsafe)
    if not result.ok:
        raise SandboxUnavailable(f"the sandbox could not run a trivial program: {result.stderr.strip()}")


# --- the result --------------------------------------------------------------------------------------------


def report(
    benchmark: str,
    problems: Sequence[Problem],
    completions: Sequence[Sequence[str]],
    passed: Sequence[Sequence[bool]],
    *,
    sampling: SamplingConfig,
    ks: Sequence[int],
    sandbox: dict[str, Any] | None = None,
    details: Callable[[Problem, Sequence[str]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The result dict (see the module docstring); ``details`` adds benchmark-specific per-problem fields."""
    if not problems:
        raise DataError(f"{benchmark}: no problems to evaluate")
    per_problem = []
    for p, cs, ok in zip(problems, completions, passed, strict=True):
        per_problem.append({
            "problem_id": p.problem_id,
            **p.info,
            "n": len(cs),
            "c": sum(ok),
            "passed": list(ok),
            "sample": cs[0] if cs else "",
            **(details(p, cs) if details else {}),
        })
    table = {r["problem_id"]: (r["n"], r["c"]) for r in per_problem}
    result: dict[str, Any] = {
        "benchmark": benchmark,
        "summary": pass_at_k_table(table, [k for k in ks if k <= sampling.n]),
        "n_problems": len(problems),
        "sampling": asdict(sampling),
    }
    if sandbox is not None:
        result["sandbox"] = sandbox
    result["per_problem"] = per_problem
    return result


def evaluate_generative(
    benchmark: str,
    problems: Sequence[Problem],
    *,
    model: Any,
    tokenizer: Any,
    sampling: SamplingConfig,
    grade: Grader,
    ks: Sequence[int] = (1, 10, 100),
    sandbox: dict[str, Any] | None = None,
    details: Callable[[Problem, Sequence[str]], dict[str, Any]] | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Sample ``sampling.n`` completions per problem, grade them, and return the result dict.

    Sandboxed benchmarks (``sandbox`` given) check the sandbox before generating: a missing bwrap is
    reported at once, not after the generation.
    """
    if not problems:
        raise DataError(f"{benchmark}: no problems to evaluate")
    if sandbox is not None:
        preflight_sandbox(unsafe=bool(sandbox.get("unsafe")))
    started = time.perf_counter()
    completions = generate(model, tokenizer, [p.prompt for p in problems], sampling=sampling,
                           batch_size=batch_size, progress=progress)
    generated = time.perf_counter()
    passed = grade(problems, completions)
    result = report(benchmark, problems, completions, passed, sampling=sampling, ks=ks, sandbox=sandbox,
                    details=details)
    result["timing_s"] = {"generate": generated - started, "grade": time.perf_counter() - generated}
    result["per_problem"] = result.pop("per_problem")  # last: the summary stays at the top of the file
    return result


# --- rows --------------------------------------------------------------------------------------------------


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a local data file: ``.jsonl`` / ``.jsonl.gz`` (one object a line), ``.json`` (an array of
    objects), or ``.parquet`` (needs pyarrow).

    Raises:
        DataError: the file is missing, unreadable, or not a list of objects; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            rows = _parquet_rows(path)
        elif name.endswith(".json"):
            rows = json.loads(path.read_text(encoding="utf-8"))
        elif name.endswith((".jsonl", ".jsonl.gz")):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]
        else:
            raise DataError(f"data file {path}: unknown format (expected .jsonl, .jsonl.gz, .json or .parquet)")
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise DataError(f"data file {path} is not readable as {path.suffix}: {err}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"data file {path} does not hold a list of JSON objects")
    return rows


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"reading {path} needs pyarrow: `pip install pyarrow` (or wmtp's `hf` extra, which brings it)"
        ) from None
    return pq.read_table(path).to_pylist()


def hub_rows(name: str, *, split: str | None) -> list[dict[str, Any]]:
    """Rows of a Hugging Face hub dataset ``NAME`` or ``NAME:CONFIG`` (the user's request to download).

    ``split=None`` concatenates every split (MBPP's few-shot tasks live in its ``prompt`` split).
    """
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"--dataset {name} needs the Hugging Face `datasets` package: `pip install datasets` "
            "(or `pip install -e '.[hf]'`); or pass a local --data-file"
        ) from None
    repo, _, config = name.partition(":")
    try:
        loaded = datasets.load_dataset(repo, config or None, split=split)
    except Exception as err:  # the hub raises many types (connection, missing config, missing split)
        raise DataError(f"could not load dataset {name!r} (split {split!r}): {err}") from err
    parts = list(loaded.values()) if isinstance(loaded, Mapping) else [loaded]
    return [dict(row) for part in parts for row in part]


def rows_from(
    *, data_file: str | Path | None, dataset: str | None, split: str | None, benchmark: str
) -> list[dict[str, Any]]:
    """Rows from exactly one of a local file or a hub dataset."""
    if (data_file is None) == (dataset is None):
        raise DataError(f"{benchmark} needs exactly one of a data file (--data-file) or a hub dataset (--dataset)")
    return read_rows(data_file) if data_file is not None else hub_rows(dataset, split=split)


def require_keys(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], *, benchmark: str) -> None:
    """Raise DataError naming the first row that lacks one of ``keys``."""
    for i, row in enumerate(rows):
        missing = [k for k in keys if k not in row]
        if missing:
            raise DataError(f"{benchmark}: row {i} lacks {missing} (has {sorted(row)})")
