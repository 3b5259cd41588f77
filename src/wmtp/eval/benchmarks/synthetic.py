"""The embedded task's test split as a benchmark: sample completions, run the hidden tests in the sandbox."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from wmtp.data.records import DataError, Record, read_records
from wmtp.eval.benchmarks.harness import Problem, SandboxSettings, evaluate_generative, grade_programs
from wmtp.eval.generate import CODE_STOPS, SamplingConfig
from wmtp.model.mtp import MTPModel

STOP = CODE_STOPS
SANDBOX = SandboxSettings(timeout_s=5.0, memory_mb=512)


def unique_problems(records: list[Record]) -> list[Record]:
    """One record per problem (its prompt and hidden tests), in first-seen order."""
    seen: dict[str, Record] = {}
    for r in records:
        if r.tests and r.problem_id not in seen:
            seen[r.problem_id] = r
    return list(seen.values())


def program(problem: Record, completion: str) -> str:
    """The program labelling runs too (`check_program`): exit code 0 iff every hidden test passes."""
    from wmtp.data.synthetic.program import check_program

    return check_program(problem.prompt, completion, problem.tests or [])


def problems_from_records(records: list[Record]) -> list[Problem]:
    """The benchmark problems of a split's records (those with tests), in first-seen order."""
    return [Problem(r.problem_id, r.prompt, info={"difficulty": r.difficulty}, data=r)
            for r in unique_problems(records)]


def load_synthetic(path: str | Path) -> list[Problem]:
    """Problems of a records file (e.g. the embedded task's ``test.jsonl``)."""
    problems = problems_from_records(read_records(path))
    if not problems:
        raise DataError(f"{path} holds no record with tests")
    return problems


def grade_synthetic(
    problems: Sequence[Problem], completions: Sequence[Sequence[str]], *, sandbox: SandboxSettings = SANDBOX,
    progress: bool = False,
) -> list[list[bool]]:
    return grade_programs(problems, completions, lambda p, c: program(p.data, c), sandbox=sandbox,
                          progress=progress)


def evaluate_synthetic(
    model: MTPModel,
    tokenizer: PreTrainedTokenizerBase,
    records: list[Record] | list[Problem],
    *,
    sampling: SamplingConfig,
    ks: tuple[int, ...] = (1, 10, 100),
    sandbox: SandboxSettings = SANDBOX,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Per-problem results (n, c, difficulty, first completion) and pass@k for every k ≤ n.

    ``records`` are a split's records (one problem per ``problem_id``) or problems already built from them
    (:func:`problems_from_records`, e.g. limited to the first few).
    """
    problems = records if records and isinstance(records[0], Problem) else problems_from_records(records)
    return evaluate_generative(
        "synthetic", problems, model=model, tokenizer=tokenizer, sampling=sampling, ks=ks,
        grade=lambda ps, cs: grade_synthetic(ps, cs, sandbox=sandbox, progress=progress),
        sandbox=sandbox.as_dict(), batch_size=batch_size, progress=progress,
    )
