"""`wmtp eval`: load a model, load each benchmark's problems, evaluate, write ``<out>/<bench>.json``.

The model is a wmtp run directory (its ``model/``, written at the end of training) or a Hugging Face causal
LM (path, `.gguf` file or hub name; wrapped as a 1-head MTPModel, so head 1 is the model itself). Each result
file is the benchmark's dict (``benchmark, summary, n_problems, sampling, sandbox, per_problem``) plus where the
model and the data came from, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wmtp.data.records import DataError
from wmtp.eval.benchmarks.base import Problem
from wmtp.eval.benchmarks.harness import evaluate
from wmtp.eval.benchmarks.registry import BENCHMARKS
from wmtp.eval.options import EvalOptions
from wmtp.model.checkpoints import CheckpointError


@dataclass(frozen=True, kw_only=True)
class EvalRequest(EvalOptions):
    """What `wmtp eval` was asked for (one request, any number of benchmarks). The options shared with
    `wmtp label` are :class:`EvalOptions`'; its own:

    Attributes:
        benches: benchmark names, from the table (:data:`~wmtp.eval.benchmarks.registry.BENCHMARKS`).
        ks: the k of pass@k (those above n are dropped).
    """

    benches: tuple[str, ...]
    ks: tuple[int, ...] = (1, 10, 100)

    def __post_init__(self) -> None:
        unknown = [b for b in self.benches if b not in BENCHMARKS]
        if unknown or not self.benches:
            raise ValueError(f"unknown benchmark(s) {unknown or self.benches}; choose from {', '.join(BENCHMARKS)}")
        if (self.data_file or self.dataset or self.bench_options) and len(self.benches) > 1:
            raise ValueError("--data-file / --dataset / --bench-option name the data of one benchmark; pass a single "
                             "--bench")
        super().__post_init__()
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"k={self.ks} must be positive integers")


# --- the model ---------------------------------------------------------------------------------------------


def load_eval_model(*, run_dir: str | Path | None = None, hf_model: str | None = None, device: str = "cpu"):
    """(model, tokenizer, description) from a wmtp run (or model) directory, or from an HF causal LM.

    Raises:
        CheckpointError: the run has no final model (``model/``), or its files are missing or corrupt.
    """
    from wmtp.data.tokenizer import load_tokenizer
    from wmtp.model.checkpoints import load_model_dir
    from wmtp.model.mtp import MTPModel

    if (run_dir is None) == (hf_model is None):
        raise ValueError("pass exactly one of a run directory (--run) or an HF model (--hf-model)")
    if hf_model is not None:
        try:
            model = MTPModel.from_pretrained_trunk(hf_model, n_heads=1).to(device)
        except (OSError, ValueError) as err:  # not found / not a supported causal LM
            raise CheckpointError(f"--hf-model {hf_model!r} could not be loaded: {err}") from err
        tokenizer = load_tokenizer(hf_model)
        source = {"hf_model": hf_model}
    else:
        run_dir = Path(run_dir)
        model_dir = run_dir if (run_dir / "wmtp_model.json").is_file() else run_dir / "model"
        if not model_dir.is_dir():
            raise CheckpointError(f"{run_dir} has no final model ({model_dir} is missing): has the run finished?")
        model = load_model_dir(model_dir, device=device)
        tok_dir = model_dir / "tokenizer" if (model_dir / "tokenizer").is_dir() else run_dir / "tokenizer"
        tokenizer = load_tokenizer(tok_dir)
        source = {"run_dir": str(run_dir), "model_dir": str(model_dir)}
    if tokenizer.pad_token is None:  # many HF tokenizers have none; padding positions are masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, source


# --- the problems ------------------------------------------------------------------------------------------


def load_problems(bench: str, options: EvalOptions, *, run_dir: Path | None) -> list[Problem]:
    """The problems of one benchmark, limited to the first ``options.limit``."""
    benchmark = BENCHMARKS[bench]
    problems = benchmark.load(options.source(benchmark, run_dir))
    if not problems:
        raise DataError(f"{bench}: no problems")
    return problems[: options.limit] if options.limit else problems


def _data_description(bench: str, req: EvalRequest, run_dir: Path | None) -> dict[str, Any]:
    if req.data_file:
        digest = hashlib.sha256(Path(req.data_file).read_bytes()).hexdigest()
        return {"file": str(req.data_file), "sha256": digest, "split": req.split}
    if req.dataset:
        return {"dataset": req.dataset, "split": req.split}
    if BENCHMARKS[bench].default_data is not None:
        return {"file": BENCHMARKS[bench].default_data}
    return {"run_test_split": str(run_dir)}


def write_json(path: Path, content: dict[str, Any]) -> None:
    """Write atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(content, indent=1))
    os.replace(tmp, path)


def run_eval(
    req: EvalRequest,
    *,
    run_dir: str | Path | None = None,
    hf_model: str | None = None,
    out_dir: str | Path | None = None,
    device: str = "cpu",
    on_result: Callable[[str, Path, dict[str, Any]], None] | None = None,
) -> dict[str, Path]:
    """Evaluate every requested benchmark; returns bench → written JSON path.

    Problems of every benchmark are loaded before the model, so a bad path fails in seconds.
    ``out_dir`` defaults to ``run_dir/eval``.
    """
    run_dir = None if run_dir is None else Path(run_dir)
    if out_dir is None:
        if run_dir is None:
            raise ValueError("with --hf-model, pass --out DIR for the result files")
        out_dir = run_dir / "eval"
    problems = {bench: load_problems(bench, req, run_dir=run_dir) for bench in req.benches}
    model, tokenizer, model_source = load_eval_model(run_dir=run_dir, hf_model=hf_model, device=device)
    written = {}
    for bench in req.benches:
        started = time.perf_counter()
        benchmark = BENCHMARKS[bench]
        result = evaluate(benchmark, model, tokenizer, problems[bench], sampling=req.sampling, ks=req.ks,
                          sandbox=req.sandbox(benchmark), batch_size=req.batch_size, progress=req.progress)
        result["model"] = model_source
        result["data"] = _data_description(bench, req, run_dir)
        result["limit"] = req.limit
        result["wall_s"] = time.perf_counter() - started
        result["per_problem"] = result.pop("per_problem")
        path = Path(out_dir) / f"{bench}.json"
        write_json(path, result)
        written[bench] = path
        if on_result is not None:
            on_result(bench, path, result)
    return written
