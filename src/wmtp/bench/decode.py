"""Decoding benchmark of a trained run: self-speculative vs plain decoding, greedy and sampled, and HF `generate`.

Variants (all decode head 1, one prompt at a time, to eos or --max-new-tokens, same thread count):
    greedy, sample                   our KV-cached decoding: `SpeculativeDecoder(model, n_draft=0)` (no drafts,
                                     one forward per token; the same code as the speculative decoder)
    speculative, speculative_sample  self-speculative decoding with all contiguous heads drafting
    hf_generate, hf_sample           HF `generate` on the trunk (greedy; sampling with the same temperature/top_p)

Timing: interleaved repeats. Each repeat runs every variant over all prompts, in an order that rotates from one
repeat to the next, so a drift in machine load hits all variants alike. Per variant and repeat the JSON keeps the
raw wall (perf_counter) and process-CPU seconds and the token count; tokens_per_s is the median over repeats,
with the spread (min, max). A speedup is the ratio of two variants' median tokens per second, with the median,
min and max of the per-repeat ratios beside it; cpu_* figures use CPU time (less disturbed by other processes).

Greedy outputs are compared token for token (speculative vs greedy vs HF generate, every repeat). Sampled outputs
differ by construction (another random stream); their distribution is tests/unit/test_spec_sampling.py's.

Prompts: the first N distinct prompts of the run's test split (the embedded synthetic task's, from the data
directory in meta.json, else regenerated from config.yaml), encoded like training records.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from wmtp.data.records import DataError

SPEEDUPS = {  # name → (faster variant, baseline)
    "greedy_vs_kv": ("speculative", "greedy"),
    "greedy_vs_hf": ("speculative", "hf_generate"),
    "sampled_vs_kv": ("speculative_sample", "sample"),
    "sampled_vs_hf": ("speculative_sample", "hf_sample"),
}


def bench_prompts(run_dir: Path, n: int) -> list[str]:
    """The first n distinct prompts of the run's test split (the embedded task's, as `wmtp eval` finds it)."""
    from wmtp.eval.benchmarks.synthetic import synthetic_test_records

    prompts = list(dict.fromkeys(r.prompt for r in synthetic_test_records(run_dir)))[:n]
    if not prompts:
        raise DataError(f"no test prompts for run {run_dir}")
    return prompts


def run_decode_bench(
    run_dir: str | Path,
    *,
    n_prompts: int = 20,
    max_new_tokens: int = 128,
    threads: int = 1,
    hf_generate: bool = True,
    repeats: int = 5,
    temperature: float = 0.8,
    top_p: float = 1.0,
    seed: int = 0,
    n_draft: int | None = None,
) -> dict[str, Any]:
    """Tokens per second of every variant (module doc), speedups, tokens per forward, acceptance per head.
    n_draft: draft heads of the speculative variants (None: all contiguous heads)."""
    if min(n_prompts, max_new_tokens, threads, repeats) < 1:
        raise ValueError(f"prompts={n_prompts}, max_new_tokens={max_new_tokens}, threads={threads}, "
                         f"repeats={repeats} must be >= 1")  # fmt: skip
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0 (the sampled variants)")
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _bench(Path(run_dir), n_prompts=n_prompts, max_new_tokens=max_new_tokens, threads=threads,
                      hf_generate=hf_generate, repeats=repeats, temperature=temperature, top_p=top_p,
                      seed=seed, n_draft=n_draft)  # fmt: skip
    finally:
        torch.set_num_threads(threads_before)


def _variants(model, eos: int, pad: int, max_new: int, temperature: float, top_p: float, hf: bool,
              n_draft: int | None) -> dict[str, Callable]:  # fmt: skip
    """name → decode(ids, generator) → (new tokens, SpecStats or None)."""
    from wmtp.eval.speculative import SpeculativeDecoder

    plain, spec = SpeculativeDecoder(model, n_draft=0), SpeculativeDecoder(model, n_draft=n_draft)

    def ours(dec: SpeculativeDecoder, sampled: bool) -> Callable:
        kw = {"temperature": temperature, "top_p": top_p} if sampled else {}

        def run(ids: list[int], gen: torch.Generator):
            outs, stats = dec.generate([ids], max_new_tokens=max_new, eos_token_id=eos, generator=gen, **kw)
            return outs[0], stats

        return run

    def hf_run(sampled: bool) -> Callable:
        kw = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0} if sampled else {}
        kw.setdefault("do_sample", False)

        @torch.inference_mode()
        def run(ids: list[int], gen: torch.Generator):
            x = torch.tensor([ids], device=model.unembed.device)
            out = model.trunk.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new,
                                       eos_token_id=eos, pad_token_id=pad, **kw)  # fmt: skip
            return out[0, len(ids) :].tolist(), None

        return run

    variants = {"greedy": ours(plain, False), "speculative": ours(spec, False), "sample": ours(plain, True),
                "speculative_sample": ours(spec, True)}  # fmt: skip
    if hf:
        variants |= {"hf_generate": hf_run(False), "hf_sample": hf_run(True)}
    return variants


def _bench(run_dir: Path, *, n_prompts: int, max_new_tokens: int, threads: int, hf_generate: bool, repeats: int,
           temperature: float, top_p: float, seed: int, n_draft: int | None) -> dict[str, Any]:  # fmt: skip
    from wmtp.eval.evaluate import load_eval_model
    from wmtp.eval.prompts import encode_prompt
    from wmtp.eval.speculative import SpecStats, contiguous_draft_heads

    model, tokenizer, _ = load_eval_model(run_dir=run_dir)
    model.eval()
    prompts = [encode_prompt(tokenizer, p) for p in bench_prompts(run_dir, n_prompts)]
    variants = _variants(model, tokenizer.eos_token_id, tokenizer.pad_token_id, max_new_tokens, temperature, top_p,
                         hf_generate, n_draft)  # fmt: skip
    names = list(variants)
    for name in names:  # warm-up: first-call allocations and lazy initialisation stay out of the timing
        variants[name](prompts[0], torch.Generator().manual_seed(seed))

    raw = {name: {"wall_s": [], "cpu_s": [], "n_tokens": []} for name in names}
    stats = {name: SpecStats() for name in names}
    outputs: dict[str, list[list[int]]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            torch.manual_seed(seed + r)  # HF sampling draws from the global generator
            gen = torch.Generator().manual_seed(seed + r)
            n, w, c = 0, time.perf_counter(), time.process_time()
            for ids in prompts:
                out, st = variants[name](ids, gen)
                n += len(out)
                outputs[name].append(out)
                stats[name] = stats[name].merge(st) if st is not None else stats[name]
            raw[name]["wall_s"].append(time.perf_counter() - w)
            raw[name]["cpu_s"].append(time.process_time() - c)
            raw[name]["n_tokens"].append(n)

    def rate(name: str, clock: str) -> list[float]:
        return [n / t for n, t in zip(raw[name]["n_tokens"], raw[name][clock])]

    result: dict[str, Any] = {}
    for name in names:
        tps = rate(name, "wall_s")
        result[name] = {"tokens_per_s": statistics.median(tps), "tokens_per_s_spread": [min(tps), max(tps)],
                        "cpu_tokens_per_s": statistics.median(rate(name, "cpu_s")), **raw[name]}  # fmt: skip
        if name.startswith("speculative"):
            result[name] |= {"tokens_per_forward": stats[name].tokens_per_forward,
                             "acceptance_per_head": stats[name].acceptance_per_head,
                             "n_forwards": stats[name].n_forwards}  # fmt: skip
    result["speedups"] = {}
    for key, (fast, base) in SPEEDUPS.items():
        if fast in result and base in result:
            ratios = [f / b for f, b in zip(rate(fast, "wall_s"), rate(base, "wall_s"))]
            result["speedups"][key] = {
                "speedup": result[fast]["tokens_per_s"] / result[base]["tokens_per_s"],
                "per_repeat_median": statistics.median(ratios), "per_repeat_spread": [min(ratios), max(ratios)],
                "cpu_speedup": result[fast]["cpu_tokens_per_s"] / result[base]["cpu_tokens_per_s"],
            }  # fmt: skip
    result["speedup"] = result["speedups"]["greedy_vs_kv"]["speedup"]
    mismatched = {i % len(prompts) for i, (g, s) in enumerate(zip(outputs["greedy"], outputs["speculative"])) if g != s}
    result["identical_outputs"] = not mismatched
    result["n_mismatched_prompts"] = len(mismatched)
    if hf_generate:
        result["identical_to_hf_generate"] = outputs["greedy"] == outputs["hf_generate"]
    result["config"] = {
        "run": str(run_dir), "n_prompts": len(prompts), "max_new_tokens": max_new_tokens, "threads": threads,
        "repeats": repeats, "temperature": temperature, "top_p": top_p, "seed": seed, "n_heads": model.n_heads,
        "n_draft": contiguous_draft_heads(model) if n_draft is None else n_draft,
        "mean_prompt_tokens": sum(map(len, prompts)) / len(prompts), "loadavg_1m": os.getloadavg()[0],
        "torch": torch.__version__,
    }  # fmt: skip
    return result
