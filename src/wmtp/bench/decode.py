"""Decoding benchmark: plain KV-cached greedy vs self-speculative greedy decoding of a trained run, in one process.

Both decoders run the same code (`wmtp.eval.speculative`: the model's HF blocks with a KV cache; greedy is the
speculative decoder with no drafts, one forward per token) on the same prompts, interleaved prompt by prompt
(the order alternates, so a drift in machine load hits both alike), with the same thread count. Their outputs
are compared token for token. HF's own `generate` (greedy) is timed as well, as a check that the greedy
baseline is not a slow strawman.

Prompts: the first N distinct prompts of the run's test split (the embedded synthetic task's, from the data
directory in meta.json, else regenerated from config.yaml), encoded like training records ([bos] + prompt).
The model is loaded as `wmtp eval` loads it (RUN/model, or a model directory itself).
Each generation runs to eos or --max-new-tokens.

Reported: tokens_per_s from wall time (perf_counter) and, less disturbed by other processes on the same cores,
cpu_tokens_per_s from this process's CPU time; speedup = speculative / greedy tokens per second (wall), and
cpu_speedup likewise; tokens_per_forward and acceptance_per_head (head k's drafts accepted per drafting step).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from wmtp.data.records import DataError


def bench_prompts(run_dir: Path, n: int) -> list[str]:
    """The first n distinct prompts of the run's test split (the embedded task's, as `wmtp eval` finds it)."""
    from wmtp.eval.benchmarks.synthetic import synthetic_test_records

    prompts = list(dict.fromkeys(r.prompt for r in synthetic_test_records(run_dir)))[:n]
    if not prompts:
        raise DataError(f"no test prompts for run {run_dir}")
    return prompts


class _Clock:
    """Accumulated wall and process-CPU seconds of timed blocks."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> _Clock:
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c


def run_decode_bench(
    run_dir: str | Path, *, n_prompts: int = 20, max_new_tokens: int = 128, threads: int = 1, hf_generate: bool = True
) -> dict[str, Any]:
    """Greedy vs speculative (and HF generate) tokens per second on a run's test prompts; see the module doc."""
    if n_prompts < 1 or max_new_tokens < 1 or threads < 1:
        raise ValueError(f"prompts={n_prompts}, max_new_tokens={max_new_tokens}, threads={threads} must be >= 1")
    run_dir = Path(run_dir)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _bench(run_dir, n_prompts=n_prompts, max_new_tokens=max_new_tokens, threads=threads,
                      hf_generate=hf_generate)  # fmt: skip
    finally:
        torch.set_num_threads(threads_before)


def _bench(run_dir: Path, *, n_prompts: int, max_new_tokens: int, threads: int, hf_generate: bool) -> dict[str, Any]:
    from wmtp.eval.evaluate import load_eval_model
    from wmtp.eval.prompts import encode_prompt
    from wmtp.eval.speculative import SpecStats, SpeculativeDecoder

    model, tokenizer, _ = load_eval_model(run_dir=run_dir)
    model.eval()
    prompts = [encode_prompt(tokenizer, p) for p in bench_prompts(run_dir, n_prompts)]
    eos = tokenizer.eos_token_id
    greedy, spec = SpeculativeDecoder(model, n_draft=0), SpeculativeDecoder(model)  # weights snapshot: untimed
    decode = {
        "greedy": lambda ids: greedy.generate([ids], max_new_tokens=max_new_tokens, eos_token_id=eos),
        "speculative": lambda ids: spec.generate([ids], max_new_tokens=max_new_tokens, eos_token_id=eos),
    }
    for name in decode:  # warm-up: first-call allocations and lazy initialisation stay out of the timing
        decode[name](prompts[0])

    clocks = {name: _Clock() for name in decode}
    stats = {name: SpecStats() for name in decode}
    outputs: dict[str, list[list[int]]] = {name: [] for name in decode}
    for i, ids in enumerate(prompts):
        for name in sorted(decode, reverse=i % 2 == 1):  # alternate which decoder goes first
            with clocks[name]:
                outs, st = decode[name](ids)
            outputs[name].append(outs[0])
            stats[name] = stats[name].merge(st)
    mismatches = sum(g != s for g, s in zip(outputs["greedy"], outputs["speculative"]))

    def rates(name: str) -> dict[str, float]:
        n = stats[name].n_tokens
        return {"tokens_per_s": n / clocks[name].wall, "cpu_tokens_per_s": n / clocks[name].cpu, "n_tokens": n,
                "wall_s": clocks[name].wall, "cpu_s": clocks[name].cpu}  # fmt: skip

    result: dict[str, Any] = {
        "greedy": rates("greedy"),
        "speculative": {**rates("speculative"), "tokens_per_forward": stats["speculative"].tokens_per_forward,
                        "acceptance_per_head": stats["speculative"].acceptance_per_head,
                        "n_forwards": stats["speculative"].n_forwards},  # fmt: skip
    }
    result["speedup"] = result["speculative"]["tokens_per_s"] / result["greedy"]["tokens_per_s"]
    result["cpu_speedup"] = result["speculative"]["cpu_tokens_per_s"] / result["greedy"]["cpu_tokens_per_s"]
    result["identical_outputs"] = mismatches == 0
    result["n_mismatched_prompts"] = mismatches
    if hf_generate:
        result["hf_generate"] = _hf_generate_rate(model, prompts, max_new_tokens, eos, tokenizer.pad_token_id)
    result["config"] = {
        "run": str(run_dir), "n_prompts": len(prompts), "max_new_tokens": max_new_tokens, "threads": threads,
        "n_heads": model.n_heads, "mean_prompt_tokens": sum(map(len, prompts)) / len(prompts),
        "loadavg_1m": os.getloadavg()[0], "torch": torch.__version__,
    }  # fmt: skip
    return result


@torch.inference_mode()
def _hf_generate_rate(model, prompts: list[list[int]], max_new_tokens: int, eos: int, pad: int) -> dict[str, float]:
    """HF `generate` greedy decoding of head 1 (the trunk), one prompt at a time: tokens per second."""
    clock, n_tokens = _Clock(), 0
    for i, ids in enumerate([prompts[0], *prompts]):  # the first is a warm-up
        x = torch.tensor([ids])
        with clock if i else _Clock():
            out = model.trunk.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                                       max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad)  # fmt: skip
        n_tokens += (out.shape[1] - len(ids)) if i else 0
    return {"tokens_per_s": n_tokens / clock.wall, "cpu_tokens_per_s": n_tokens / clock.cpu, "n_tokens": n_tokens}
