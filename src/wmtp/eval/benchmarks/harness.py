"""The one path every benchmark takes, driven by its :class:`~wmtp.eval.benchmarks.base.Benchmark` fields:
sample → grade → pass@k (:func:`evaluate`), the grading engine (:func:`grade_problems`: in-process answer checks
or sandboxed :class:`~wmtp.eval.benchmarks.base.Check` s on a bounded pool) and the result dict.

The result dict of a generative benchmark::

    {"benchmark", "summary": {"pass@k": ...}, "n_problems", "sampling", "sandbox" (sandboxed ones only),
     "timing_s", "per_problem": [{"problem_id", ...info, "n", "c", "passed": [bool per sample], "sample",
     "answers" (answer-checked ones only), "passed_<name>" (per extra verdict)}], "summary_<name>" (per extra
     verdict: the Benchmark's ``extra_verdicts``, e.g. HumanEval+'s base pass@k)}

``per_problem`` keeps the benchmark's order and ids, so two runs' results can be paired by problem.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from typing import Any

from rich.progress import Progress

from wmtp.data.records import DataError
from wmtp.eval.benchmarks.base import DEFAULT_WORKERS, Benchmark, Check, Problem, SandboxSettings
from wmtp.eval.generate import SamplingConfig, generate
from wmtp.eval.passk import pass_at_k_table
from wmtp.eval.sandbox import ExecResult, SandboxUnavailable, run_python

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
    if result.truncated:
        return False
    if check.outputs_match is not None:
        return check.outputs_match(result.stdout, check.expected_stdout)
    return normalize_output(result.stdout) == normalize_output(check.expected_stdout)


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


def grade_problems(
    bench: Benchmark,
    problems: Sequence[Problem],
    completions: Sequence[Sequence[str]],
    *,
    sandbox: SandboxSettings | None = None,
    progress: bool = False,
) -> list[list[bool]]:
    """passed[i][j]: completion j of problem i is right by the benchmark's grader: ``is_correct`` in-process, or
    every one of its ``checks`` in the sandbox, with ``sandbox``'s limits (default: the benchmark's)."""
    if bench.is_correct is not None:
        return [[bench.is_correct(p, c) for c in cs] for p, cs in zip(problems, completions, strict=True)]
    if bench.checks is None:
        raise ValueError(f"{bench.name} scores its choices by log-likelihood: it has no completions to grade")
    limits = sandbox or bench.sandbox
    samples = [bench.checks(p, c, limits) for p, cs in zip(problems, completions, strict=True) for c in cs]
    flat = iter(run_checks(samples, unsafe=limits.unsafe, workers=limits.workers, progress=progress))
    return [[next(flat) for _ in cs] for cs in completions]


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
    answer: Callable[[str], str | None] | None = None,
    extra: Mapping[str, Sequence[Sequence[bool]]] | None = None,
) -> dict[str, Any]:
    """The result dict (see the module docstring); with ``answer``, each problem lists its samples' answers;
    ``extra`` verdicts (name → passed, shaped like ``passed``) add ``summary_<name>`` and ``passed_<name>``."""
    extra = extra or {}
    if not problems:
        raise DataError(f"{benchmark}: no problems to evaluate")
    per_problem = []
    for i, (p, cs, ok) in enumerate(zip(problems, completions, passed, strict=True)):
        per_problem.append({
            "problem_id": p.problem_id,
            **p.info,
            "n": len(cs),
            "c": sum(ok),
            "passed": list(ok),
            "sample": cs[0] if cs else "",
            **({"answers": [answer(c) for c in cs]} if answer else {}),
            **{f"passed_{name}": list(verdicts[i]) for name, verdicts in extra.items()},
        })
    shown_ks = [k for k in ks if k <= sampling.n]
    table = {r["problem_id"]: (r["n"], r["c"]) for r in per_problem}
    result: dict[str, Any] = {
        "benchmark": benchmark,
        "summary": pass_at_k_table(table, shown_ks),
        **{f"summary_{name}": pass_at_k_table({r["problem_id"]: (r["n"], sum(r[f"passed_{name}"]))
                                               for r in per_problem}, shown_ks) for name in extra},
        "n_problems": len(problems),
        "sampling": asdict(sampling),
    }
    if sandbox is not None:
        result["sandbox"] = sandbox
    result["per_problem"] = per_problem
    return result


def evaluate(
    bench: Benchmark,
    model: Any,
    tokenizer: Any,
    problems: Sequence[Problem],
    *,
    sampling: SamplingConfig,
    ks: Sequence[int] = (1, 10, 100),
    sandbox: SandboxSettings | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """The result dict of one benchmark on loaded problems: its own ``score`` (HellaSwag), or ``sampling.n``
    completions per problem cut at the benchmark's stop strings, graded, and pass@k for the ``ks`` up to n.

    Sandboxed benchmarks run with ``sandbox``'s limits (default: the benchmark's) and check the sandbox before
    generating: a missing bwrap is reported at once, not after the generation.
    """
    if bench.score is not None:
        return bench.score(model, tokenizer, problems, batch_size=batch_size, progress=progress)
    if not problems:
        raise DataError(f"{bench.name}: no problems to evaluate")
    limits = None if bench.sandbox is None else sandbox or bench.sandbox
    if limits is not None:
        preflight_sandbox(unsafe=limits.unsafe)
    sampling = bench.sampling(sampling)
    started = time.perf_counter()
    completions = generate(model, tokenizer, [p.prompt for p in problems], sampling=sampling,
                           batch_size=batch_size, progress=progress)
    generated = time.perf_counter()
    passed = grade_problems(bench, problems, completions, sandbox=limits, progress=progress)
    extra = {name: grade_problems(replace(bench, checks=checks, extra_verdicts={}), problems, completions,
                                  sandbox=limits, progress=progress) for name, checks in bench.extra_verdicts.items()}
    result = report(bench.name, problems, completions, passed, sampling=sampling, ks=ks, answer=bench.answer,
                    sandbox=None if limits is None else limits.as_dict(**bench.sandbox_notes), extra=extra)
    result["timing_s"] = {"generate": generated - started, "grade": time.perf_counter() - generated}
    result["per_problem"] = result.pop("per_problem")  # last: the summary stays at the top of the file
    return result
