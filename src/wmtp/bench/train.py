"""Training-step benchmark: NTP (H=1) vs MTP (ours) vs naive MTP on the same Llama-style trunk.

Variants (each one optimizer step = forward + backward + AdamW step + zero_grad, all tokens are targets):
    ntp        H=1 through `wmtp.train.step.forward_backward` (the same fused chunked CE as ours, so the
               ratios measure the extra heads only: a stricter baseline than HF's loss, which holds [B,T,V])
    mtp        H heads through `forward_backward` with `UniformWeight` (Meta's sequential per-head backward)
    naive_mtp  H heads: `model(input_ids)` materialises logits [B,T,H,V] in one graph, F.cross_entropy, one backward

Each variant runs in its own fresh Python process (`python -m wmtp.bench.train '<json>'`), one after
another, so that memory peaks never mix. Memory is the process's resident set size in MiB (1024² bytes):
`peak_mem_mb` is the absolute peak RSS (`ru_maxrss`) over the whole process, so all three include the same
Python + torch + transformers baseline (`rss_import_mb`, RSS before the model is built) and the same
allocator behaviour; `rss_state_mb` is the RSS after the first step (parameters + AdamW moments, gradients
freed by zero_grad). Differences of peaks are therefore what one variant needs beyond another.
RSS also holds memory glibc's malloc keeps after tensors are freed (fragmentation, raised mmap/trim
thresholds), which differs between runs; so each process also profiles one extra step after the timed
ones and reports `tensor_peak_mb`, the peak of live tensor bytes (parameters, buffers, AdamW state +
the step's allocations), and the memory goal is reported on both (`mem_goal_met`, `tensor_mem_goal_met`).

Goals (reported, not asserted):
    time_ratio = mtp.step_s / ntp.step_s ≤ flops_ratio (analytic matmul FLOPs, `matmul_flops_per_token`)
    (wall time; `cpu_time_ratio`, from process CPU time of all threads, is less disturbed by other
    processes on the same cores, whose load is recorded in config.loadavg_1m)
    extra_mem_mb = mtp.peak − ntp.peak ≤ extra_state_mb + 0.10 · ntp.peak, where extra_state_mb is the fp32
    parameters + gradients + two AdamW moments of the extra heads = 16 bytes × extra parameters.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

MIB = 1024**2
WARMUP_STEPS = 2
VARIANTS = ("ntp", "mtp", "naive_mtp")
MEMORY_METHOD = (
    "peak_mem_mb: absolute peak RSS (ru_maxrss) of a fresh process per variant, MiB, including the shared "
    "python/torch/transformers baseline (rss_import_mb); warm-up steps included (same shapes as timed steps). "
    "tensor_peak_mb: peak live tensor bytes during one extra profiled step (no allocator effects)"
)


def matmul_flops_per_token(
    *,
    d_model: int,
    d_ff: int,
    n_attn_heads: int,
    n_kv_heads: int,
    vocab: int,
    seq: int,
    n_blocks: int,
    n_unembed: int,
) -> float:
    """Training (forward + backward) matmul FLOPs per token of a Llama-style stack.

    Per block, with head size hs = d_model / n_attn_heads and D = d_model:
        projections  2 · (D·D [q] + 2·D·(n_kv_heads·hs) [k,v, GQA] + D·D [o] + 3·D·d_ff [gate, up, down])
        attention    2·2·T·D (scores QKᵀ and values AV over T keys) / 2, because the mask is causal:
                     on average a token attends to half the sequence, so we count half
    Per unembedding: 2·V·D. Total forward = n_blocks · block + n_unembed · 2·V·D; backward = 2 × forward
    (gradients w.r.t. inputs and weights), so training = 3 × forward. Embedding lookups, norms, softmax and
    the CE itself are not matmuls and are not counted.
    MTP with head 1 = the trunk's last block: n_blocks = n_layers + H − 1, n_unembed = H; NTP: n_layers, 1.
    """
    D, hs = d_model, d_model // n_attn_heads
    block_params = D * D + 2 * D * n_kv_heads * hs + D * D + 3 * D * d_ff
    block = 2 * block_params + 2 * 2 * seq * D / 2
    forward = n_blocks * block + n_unembed * 2 * vocab * D
    return 3.0 * forward


# ---- the parent: one subprocess per variant, then ratios -----------------------------------------------


def run_train_bench(
    *,
    vocab: int = 32000,
    seq: int = 1024,
    d_model: int = 256,
    n_layers: int = 4,
    n_heads: int = 4,
    batch: int = 1,
    steps: int = 5,
    seed: int = 0,
    weighting: str = "uniform",
) -> dict[str, Any]:
    """Step time and memory of NTP (H=1), our MTP (H=n_heads) and naive MTP, each in its own process;
    with `weighting` ≠ uniform also MTP with that weighting (`mtp_<name>`, rho1 reading a cached ref_ce) and
    `weighting_time_ratio` = its step time / uniform MTP's.

    Returns a JSON-able dict: per-variant results ("ntp", "mtp", "naive_mtp": step_s (median of `steps`
    timed steps after 2 warm-up steps), peak_mem_mb, param_mb, …), the ratios and the goal booleans
    (see the module docstring), and "config".
    """
    threads = _n_cores()
    common = dict(vocab=vocab, seq=seq, d_model=d_model, n_layers=n_layers, batch=batch, steps=steps,
                  seed=seed, threads=threads)  # fmt: skip
    plan = {"ntp": (1, "ours", "uniform"), "mtp": (n_heads, "ours", "uniform"), "naive_mtp": (n_heads, "naive", "uniform")}
    if weighting != "uniform":
        plan[f"mtp_{weighting}"] = (n_heads, "ours", weighting)
    load_before = _load_1m()  # other processes on these cores make step times meaningless: record the load
    res = {
        name: _spawn({**common, "n_heads": h, "mode": mode, "weighting": w}) for name, (h, mode, w) in plan.items()
    }
    load_after = _load_1m()
    ntp, mtp, naive = res["ntp"], res["mtp"], res["naive_mtp"]
    weighted = {}
    if weighting != "uniform":
        other = res[f"mtp_{weighting}"]
        weighted = {
            "weighting": weighting,
            "weighting_time_ratio": other["step_s"] / mtp["step_s"],
            "weighting_cpu_time_ratio": other["step_cpu_s"] / mtp["step_cpu_s"],
        }

    cfg = _model_config(d_model=d_model, n_layers=n_layers, n_heads=n_heads, seq=seq)
    shape = dict(d_model=d_model, d_ff=_d_ff(cfg), n_attn_heads=cfg.n_attn_heads,
                 n_kv_heads=cfg.n_kv_heads or cfg.n_attn_heads, vocab=vocab, seq=seq)  # fmt: skip
    flops_ntp = matmul_flops_per_token(**shape, n_blocks=n_layers, n_unembed=1)
    flops_mtp = matmul_flops_per_token(**shape, n_blocks=n_layers + n_heads - 1, n_unembed=n_heads)

    extra_params = mtp["n_params"] - ntp["n_params"]
    extra_state_mb = 4 * 4 * extra_params / MIB  # fp32 params + grads + AdamW exp_avg + exp_avg_sq
    extra_mem_mb = mtp["peak_mem_mb"] - ntp["peak_mem_mb"]
    mem_budget_mb = extra_state_mb + 0.10 * ntp["peak_mem_mb"]
    time_ratio = mtp["step_s"] / ntp["step_s"]
    flops_ratio = flops_mtp / flops_ntp
    tensor = _tensor_comparison(ntp, mtp, naive, extra_state_mb)
    return {
        **res,
        "time_ratio": time_ratio,
        "flops_ratio": flops_ratio,
        "mem_ratio": mtp["peak_mem_mb"] / ntp["peak_mem_mb"],
        "extra_mem_mb": extra_mem_mb,
        "extra_state_mb": extra_state_mb,
        "mem_budget_mb": mem_budget_mb,
        "cpu_time_ratio": mtp["step_cpu_s"] / ntp["step_cpu_s"],
        "naive_time_ratio": naive["step_s"] / ntp["step_s"],
        "naive_mem_ratio": naive["peak_mem_mb"] / ntp["peak_mem_mb"],
        "naive_extra_mem_mb": naive["peak_mem_mb"] - ntp["peak_mem_mb"],
        "time_goal_met": time_ratio <= flops_ratio,
        "mem_goal_met": extra_mem_mb <= mem_budget_mb,
        **tensor,
        **weighted,
        "config": {
            **common,
            "n_heads": n_heads,
            **{k: shape[k] for k in ("d_ff", "n_attn_heads", "n_kv_heads")},
            "tie_embeddings": cfg.tie_embeddings,
            "head1_is_trunk_layer": cfg.head1_is_trunk_layer,
            "warmup_steps": WARMUP_STEPS,
            "chunk_tokens": _chunk_tokens(),
            "extra_params": extra_params,
            "flops_per_token": {"ntp": flops_ntp, "mtp": flops_mtp},
            "memory": MEMORY_METHOD,
            "loadavg_1m": [load_before, load_after],
            "torch": ntp["torch"],
        },
    }


def _tensor_comparison(ntp: dict, mtp: dict, naive: dict, extra_state_mb: float) -> dict[str, Any]:
    """The memory comparison again on live-tensor peaks (no allocator caching or fragmentation)."""
    if None in (ntp["tensor_peak_mb"], mtp["tensor_peak_mb"], naive["tensor_peak_mb"]):
        return {}
    extra = mtp["tensor_peak_mb"] - ntp["tensor_peak_mb"]
    budget = extra_state_mb + 0.10 * ntp["tensor_peak_mb"]
    return {
        "extra_tensor_mem_mb": extra,
        "tensor_mem_budget_mb": budget,
        "naive_extra_tensor_mem_mb": naive["tensor_peak_mb"] - ntp["tensor_peak_mb"],
        "tensor_mem_goal_met": extra <= budget,
    }


def _spawn(params: dict[str, Any]) -> dict[str, Any]:
    """Run one variant in a fresh interpreter; its last stdout line is the JSON result."""
    cmd = [sys.executable, "-m", "wmtp.bench.train", json.dumps(params)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"benchmark subprocess failed ({params}), exit {proc.returncode}:\n{proc.stderr[-4000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- the child: one variant, measured ----------------------------------------------------------------


def measure_variant(params: dict[str, Any]) -> dict[str, Any]:
    """Build model + AdamW, run 2 warm-up and `steps` timed optimizer steps; meant for a fresh process."""
    import torch

    from wmtp.config import OptimConfig
    from wmtp.model.mtp import MTPModel
    from wmtp.train.optim import build_optimizer

    torch.set_num_threads(params["threads"])
    torch.manual_seed(params["seed"])
    rss_import_mb = _rss_mb()

    cfg = _model_config(d_model=params["d_model"], n_layers=params["n_layers"], n_heads=params["n_heads"],
                        seq=params["seq"])  # fmt: skip
    model = MTPModel.from_config(cfg, vocab_size=params["vocab"], pad_id=0, bos_id=1, eos_id=2).train()
    weight_fn = _weight_fn(params["weighting"])
    weight_fn.attach(model)  # e.g. the critic's default value head (a transformer block)
    optimizer = build_optimizer(model, OptimConfig(), extra_groups=weight_fn.param_groups(model))
    B, T = params["batch"], params["seq"]
    ids = torch.randint(0, params["vocab"], (B, T))
    batch = {"input_ids": ids, "loss_mask": torch.ones(B, T, dtype=torch.bool),
             "attention_mask": torch.ones(B, T, dtype=torch.bool),
             "is_correct": (torch.arange(B) % 2).float()}  # fmt: skip
    if weight_fn.uses_reference:
        # a cached reference: its CE of each token is just another batch tensor during the step
        batch["ref_ce"] = torch.rand(B, T) * 4
    loss_fn = (lambda m, b: _ours_step(m, b, weight_fn)) if params["mode"] == "ours" else _naive_step

    times, cpu_times, losses, rss_state_mb = [], [], [], None
    for i in range(WARMUP_STEPS + params["steps"]):
        t0, c0 = time.perf_counter(), time.process_time()
        losses.append(loss_fn(model, batch))  # forward + backward; returns a float (a sync point)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if i == 0:
            rss_state_mb = _rss_mb()  # params + AdamW moments now exist; grads were just freed
        if i >= WARMUP_STEPS:
            times.append(dt)
            cpu_times.append(dc)

    peak_mem_mb = _peak_rss_mb()  # read before the profiled step below can add to it
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "step_s": statistics.median(times),
        "step_cpu_s": statistics.median(cpu_times),
        "peak_mem_mb": peak_mem_mb,
        "tensor_peak_mb": _tensor_peak_mb(model, optimizer, lambda: loss_fn(model, batch)),
        "param_mb": 4 * n_params / MIB,
        "n_params": n_params,
        "rss_import_mb": rss_import_mb,
        "rss_state_mb": rss_state_mb,
        "step_s_all": times,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "n_heads": model.n_heads,
        "mode": params["mode"],
        "torch": torch.__version__,
    }


def _tensor_peak_mb(model, optimizer, forward_backward_fn) -> float | None:
    """Peak bytes of live tensors during one more optimizer step, MiB, allocator-independent: parameters,
    buffers and AdamW state held at the step's start + the peak running sum of the profiler's allocation
    events during the step. None if this torch's profiler does not expose its memory events."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    held = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
            for t in [*model.parameters(), *model.buffers()]
            + [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]}  # fmt: skip
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        forward_backward_fn()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    try:  # kineto's raw memory events: one signed nbytes per allocation / free
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        events.sort(key=lambda e: e.start_ns())
        deltas = [e.nbytes() for e in events]
    except AttributeError:
        return None
    running = peak = 0
    for d in deltas:
        running += d
        peak = max(peak, running)
    return (sum(held.values()) + peak) / MIB


def _weight_fn(name: str):
    """The WeightFn of `weighting.name` with its default settings (rho1 reads the batch's ref_ce; the critic's
    value loss joins the step as in stage 2, without an anchor)."""
    from wmtp.config import WeightingConfig
    from wmtp.registry import build_weight_fn

    return build_weight_fn(WeightingConfig(name=name))


def _ours_step(model, batch, weight_fn) -> float:
    """forward_backward: Meta's sequential per-head backward, fused chunked CE."""
    from wmtp.config import WeightingConfig
    from wmtp.train.step import batch_targets, forward_backward

    _, valid = batch_targets(batch, model.n_heads)
    result = forward_backward(model, batch, weight_fn=weight_fn, wcfg=WeightingConfig(),
                              n_valid_step=int(valid.sum()), chunk_tokens=_chunk_tokens(),
                              n_tokens_step=int(batch["loss_mask"].sum()))  # fmt: skip
    return result.loss


def _naive_step(model, batch) -> float:
    """All heads' logits [B,T,H,V] in one graph; mean CE over valid (t,k) = the uniform loss; one backward."""
    import torch.nn.functional as F

    from wmtp.model.loss import IGNORE_INDEX
    from wmtp.train.step import batch_targets

    targets, _ = batch_targets(batch, model.n_heads)  # [B,T,H], -100 where invalid
    logits = model(batch["input_ids"], batch["attention_mask"])  # [B,T,H,V]
    loss = F.cross_entropy(logits.flatten(0, 2), targets.flatten(), ignore_index=IGNORE_INDEX)
    loss.backward()
    return loss.item()


# ---- helpers ---------------------------------------------------------------------------------------


def _model_config(*, d_model: int, n_layers: int, n_heads: int, seq: int):
    from wmtp.config import ModelConfig

    return ModelConfig(n_heads=n_heads, d_model=d_model, n_layers=n_layers, max_seq_len=max(seq, 8))


def _d_ff(cfg) -> int:
    return cfg.d_ff or 64 * ((4 * cfg.d_model + 63) // 64)  # as MTPModel.from_config


def _chunk_tokens() -> int:
    from wmtp.config import TrainConfig

    return TrainConfig().ce_chunk_tokens


def _n_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _load_1m() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _rss_mb() -> float | None:
    """Current resident set size (Linux /proc), MiB; None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB
    except OSError:
        return None


def _peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


def _main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m wmtp.bench.train '<json parameters>'")
    print(json.dumps(measure_variant(json.loads(argv[0]))))


if __name__ == "__main__":
    _main(sys.argv[1:])
