"""`wmtp label`: sample completions from a model and label each by execution (code) or answer check (math).

The way to verifiable incorrect (and correct) training data for benchmarks that ship only reference
solutions (MBPP, GSM8K, MATH, …): n samples per problem, graded exactly as `wmtp eval` grades them (the
benchmark loaders, stop strings and graders of `wmtp.eval.benchmarks`; code runs only in the sandbox, on
`workers` parallel programs), written as records (DESIGN §3) with `is_correct`.

Output directory:
    label.json                 the request (benchmark, data, model, sampling); a rerun must match it
    shards/shard-NNNNN.jsonl   records of `chunk_problems` problems each, written atomically
    records.jsonl              every shard's records in problem order, rewritten at the end
Resumable: problems that already have a shard are not sampled again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rich.progress import Progress

from wmtp.data.records import DataError, Record, read_records, write_records
from wmtp.eval.benchmarks.base import Problem
from wmtp.eval.benchmarks.harness import grade_problems, preflight_sandbox
from wmtp.eval.benchmarks.registry import BENCHMARKS
from wmtp.eval.evaluate import load_eval_model, load_problems
from wmtp.eval.generate import generate
from wmtp.eval.options import EvalOptions

LABELLED = tuple(name for name, b in BENCHMARKS.items() if b.generative)


@dataclass(frozen=True, kw_only=True)
class LabelRequest(EvalOptions):
    """What to label. The options shared with `wmtp eval` are :class:`EvalOptions`' (`sampling.stop` is replaced
    by the benchmark's stop strings); its own:

    Attributes:
        bench: one of :data:`LABELLED`.
        chunk_problems: problems per shard (the unit of resumption).
    """

    bench: str
    chunk_problems: int = 64

    def __post_init__(self) -> None:
        if self.bench not in LABELLED:
            raise ValueError(f"cannot label {self.bench!r}; choose one of {', '.join(LABELLED)}")
        if self.chunk_problems < 1:
            raise ValueError(f"chunk_problems={self.chunk_problems} must be >= 1")
        super().__post_init__()


def grade(req: LabelRequest, problems: Sequence[Problem], completions: Sequence[Sequence[str]]) -> list[list[bool]]:
    """passed[i][j] of completion j of problem i, by the benchmark's own grader."""
    bench = BENCHMARKS[req.bench]
    return grade_problems(bench, problems, completions, sandbox=req.sandbox(bench))


def to_records(
    bench: str, problems: Sequence[Problem], completions: Sequence[Sequence[str]], passed: Sequence[Sequence[bool]]
) -> list[Record]:
    """One record per (problem, sample): the prompt the model saw, its completion, the grade."""
    out = []
    for p, cs, ok in zip(problems, completions, passed, strict=True):
        difficulty = p.info.get("difficulty", p.info.get("level"))
        for j, (completion, correct) in enumerate(zip(cs, ok, strict=True)):
            out.append(Record(
                id=f"{bench}/{p.problem_id}/s{j}", problem_id=p.problem_id, prompt=p.prompt, completion=completion,
                is_correct=bool(correct), source=f"label/{bench}",
                difficulty=None if difficulty is None else str(difficulty),
            ))
    return out


def _identity(req: LabelRequest, model_source: dict[str, Any]) -> dict[str, Any]:
    """What must not change between a run and its resumption."""
    data = {"data_file": req.data_file, "dataset": req.dataset, "split": req.split, "n_shot": req.n_shot,
            "fewshot_file": req.fewshot_file}
    if req.data_file:
        data["sha256"] = hashlib.sha256(Path(req.data_file).read_bytes()).hexdigest()
    return {"bench": req.bench, "data": data, "model": model_source,
            "sampling": asdict(BENCHMARKS[req.bench].sampling(req.sampling))}


def _chunk_seed(seed: int, problems: Sequence[Problem]) -> int:
    """A sampling seed of one chunk that depends on the seed and the chunk's problems, not on resumption."""
    text = json.dumps([seed, [p.problem_id for p in problems]])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def label(
    req: LabelRequest,
    *,
    out_dir: str | Path,
    run_dir: str | Path | None = None,
    hf_model: str | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Sample, grade and write records (resuming a previous run into `out_dir`); returns a summary."""
    out_dir = Path(out_dir)
    problems = load_problems(req.bench, req, run_dir=None if run_dir is None else Path(run_dir))
    ids = [p.problem_id for p in problems]
    if len(set(ids)) != len(ids):
        raise DataError(f"{req.bench}: problem ids are not unique; records could not be resumed by problem")
    model_source = {"run_dir": str(run_dir)} if run_dir is not None else {"hf_model": hf_model}
    identity = json.loads(json.dumps(_identity(req, model_source)))  # as read back: tuples become lists
    meta = out_dir / "label.json"
    if meta.is_file() and json.loads(meta.read_text()) != identity:
        raise DataError(f"{out_dir} holds labels of another request (see {meta}); use another --out or the same "
                        "options")
    out_dir.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps(identity, indent=1) + "\n")

    shards = sorted((out_dir / "shards").glob("shard-*.jsonl"))
    done = {r.problem_id for shard in shards for r in read_records(shard)}
    todo = [p for p in problems if p.problem_id not in done]
    if todo:
        if BENCHMARKS[req.bench].sandbox is not None:
            preflight_sandbox(unsafe=req.unsafe)  # before loading a model and generating for minutes
        model, tokenizer, _ = load_eval_model(run_dir=run_dir, hf_model=hf_model, device=device)
        next_index = 1 + max((int(s.stem.split("-")[1]) for s in shards), default=-1)
        with Progress(disable=not req.progress) as bar:
            task = bar.add_task(f"label {req.bench}", total=len(todo))
            for start in range(0, len(todo), req.chunk_problems):
                chunk = todo[start : start + req.chunk_problems]
                sampling = replace(BENCHMARKS[req.bench].sampling(req.sampling),
                                   seed=_chunk_seed(req.sampling.seed, chunk))
                completions = generate(model, tokenizer, [p.prompt for p in chunk], sampling=sampling,
                                       batch_size=req.batch_size, progress=False)
                records = to_records(req.bench, chunk, completions, grade(req, chunk, completions))
                write_records(out_dir / "shards" / f"shard-{next_index:05d}.jsonl", records)
                next_index += 1
                bar.update(task, advance=len(chunk))

    by_problem: dict[str, list[Record]] = {}
    for shard in sorted((out_dir / "shards").glob("shard-*.jsonl")):
        for r in read_records(shard):
            by_problem.setdefault(r.problem_id, []).append(r)
    records = [r for pid in ids for r in by_problem.get(pid, [])]
    write_records(out_dir / "records.jsonl", records)
    return {
        "bench": req.bench,
        "problems": len(problems),
        "problems_sampled_now": len(todo),
        "problems_reused": len(problems) - len(todo),
        "records": len(records),
        "correct_ratio": sum(r.is_correct for r in records) / len(records) if records else None,
        "problems_with_a_correct_sample": sum(any(r.is_correct for r in by_problem.get(pid, [])) for pid in ids),
        "path": str(out_dir / "records.jsonl"),
    }
