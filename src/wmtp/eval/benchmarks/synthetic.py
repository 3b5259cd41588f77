"""The embedded task's test split as a benchmark: sample completions, run the hidden tests in the sandbox.

Data: a records file (``--data-file``, e.g. a data directory's ``test.jsonl``) or, by default, the test split of
the run being evaluated. One problem per ``problem_id`` (its first record with tests); stops: the code stops.
Grade: prompt + completion + the hidden asserts, run to their end (`base.run_to_end`: an early exit fails,
``__name__`` is not ``"__main__"``), exits 0 within the timeout.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from wmtp.data.records import DataError, Record, read_records
from wmtp.eval.benchmarks.base import Benchmark, DataSource, Problem, SandboxSettings, single_run
from wmtp.eval.benchmarks.harness import evaluate
from wmtp.eval.generate import CODE_STOPS, SamplingConfig
from wmtp.model.mtp import MTPModel


def unique_problems(records: list[Record]) -> list[Record]:
    """One record per problem (its prompt and hidden tests), in first-seen order."""
    seen: dict[str, Record] = {}
    for r in records:
        if r.tests and r.problem_id not in seen:
            seen[r.problem_id] = r
    return list(seen.values())


def program(problem: Record, completion: str) -> str:
    """The graded source (`check_source`); under `single_run` it is the program labelling runs too
    (`check_program`): exit code 0 iff every hidden test ran and passed."""
    from wmtp.data.synthetic.program import check_source

    return check_source(problem.prompt, completion, problem.tests or [])


def problem_of(record: Record) -> Problem:
    return Problem(record.problem_id, record.prompt, info={"difficulty": record.difficulty}, data=record)


def problems_from_records(records: list[Record]) -> list[Problem]:
    """The benchmark problems of a split's records (those with tests), in first-seen order."""
    return [problem_of(r) for r in unique_problems(records)]


def problems_of(rows: Sequence[Mapping[str, Any]]) -> list[Problem]:
    """One problem per record row (a record with its hidden tests), in row order."""
    return [problem_of(Record.model_validate(row)) for row in rows]


def load_synthetic(path: str | Path) -> list[Problem]:
    """Problems of a records file (e.g. the embedded task's ``test.jsonl``)."""
    problems = problems_from_records(read_records(path))
    if not problems:
        raise DataError(f"{path} holds no record with tests")
    return problems


def synthetic_test_records(run_dir: Path) -> list[Record]:
    """The embedded task's test split of the run: the data directory it trained from (meta.json), or the
    split regenerated from its config (deterministic) when that directory is gone."""
    meta_path = run_dir / "meta.json"
    if meta_path.is_file():
        data_dir = json.loads(meta_path.read_text()).get("data_dir")
        if data_dir and (Path(data_dir) / "test.jsonl").is_file():
            return read_records(Path(data_dir) / "test.jsonl")
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise DataError(f"{run_dir} has neither meta.json's data directory nor config.yaml; pass --data-file")
    from wmtp.config import load_config
    from wmtp.data.synthetic import generate_splits

    cfg = load_config(config)
    if cfg.data.path is not None:
        raise DataError(f"the run trained on {cfg.data.path}, which has no test.jsonl; pass --data-file")
    return generate_splits(cfg.data.synthetic)["test"]


def load(source: DataSource) -> list[Problem]:
    if source.options:
        raise DataError(f"--bench-option {', '.join(source.options)}: synthetic has no settings")
    if source.dataset:
        raise DataError("synthetic reads a records file (--data-file) or the run's own test split")
    if source.data_file:
        return load_synthetic(source.data_file)
    if source.run_dir is None:
        raise DataError("synthetic needs --run (its test split) or --data-file (a records jsonl)")
    return problems_from_records(synthetic_test_records(source.run_dir))


BENCHMARK = Benchmark(
    name="synthetic", load=load, from_rows=problems_of, stop=CODE_STOPS,
    checks=single_run(lambda p, completion: program(p.data, completion)),
    sandbox=SandboxSettings(timeout_s=5.0, memory_mb=512),
)


def evaluate_synthetic(
    model: MTPModel,
    tokenizer: PreTrainedTokenizerBase,
    records: list[Record],
    *,
    sampling: SamplingConfig,
    ks: tuple[int, ...] = (1, 10, 100),
    progress: bool = True,
) -> dict[str, Any]:
    """The benchmark on a split's records (one problem per ``problem_id``): per-problem results (n, c,
    difficulty, first completion) and pass@k for every k ≤ n, with the default sandbox limits."""
    return evaluate(BENCHMARK, model, tokenizer, problems_from_records(records), sampling=sampling, ks=ks,
                    progress=progress)
