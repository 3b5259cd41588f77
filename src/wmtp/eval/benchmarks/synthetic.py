"""The embedded task's test split as a benchmark: sample completions, run the hidden tests in the sandbox."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from transformers import PreTrainedTokenizerBase

from wmtp.data.records import Record
from wmtp.eval.generate import SamplingConfig, generate
from wmtp.eval.passk import pass_at_k_table
from wmtp.eval.sandbox import run_many
from wmtp.model.mtp import MTPModel


def unique_problems(records: list[Record]) -> list[Record]:
    """One record per problem (its prompt and hidden tests), in first-seen order."""
    seen: dict[str, Record] = {}
    for r in records:
        if r.tests and r.problem_id not in seen:
            seen[r.problem_id] = r
    return list(seen.values())


def program(problem: Record, completion: str) -> str:
    """prompt + completion, then the hidden asserts: exit code 0 iff every test passes."""
    return problem.prompt + completion + "\n\n" + "\n".join(problem.tests or []) + "\n"


def evaluate_synthetic(
    model: MTPModel,
    tokenizer: PreTrainedTokenizerBase,
    records: list[Record],
    *,
    sampling: SamplingConfig,
    ks: tuple[int, ...] = (1, 10, 100),
    timeout_s: float = 5.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Per-problem results (n, c, difficulty, first completion) and pass@k for every k ≤ n."""
    problems = unique_problems(records)
    completions = generate(model, tokenizer, [p.prompt for p in problems], sampling=sampling, progress=progress)
    jobs = [program(p, c) for p, cs in zip(problems, completions) for c in cs]
    results = iter(run_many(jobs, timeout_s=timeout_s, memory_mb=512))
    per_problem = []
    for p, cs in zip(problems, completions):
        passed = [next(results).ok for _ in cs]
        per_problem.append(
            {"problem_id": p.problem_id, "difficulty": p.difficulty, "n": len(cs), "c": sum(passed), "sample": cs[0]}
        )
    table = {r["problem_id"]: (r["n"], r["c"]) for r in per_problem}
    return {
        "benchmark": "synthetic",
        "summary": pass_at_k_table(table, [k for k in ks if k <= sampling.n]),
        "n_problems": len(problems),
        "sampling": asdict(sampling),
        "sandbox": {"timeout_s": timeout_s, "memory_mb": 512},
        "per_problem": per_problem,
    }
