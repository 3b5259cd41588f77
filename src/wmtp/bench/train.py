"""Training-step benchmark: NTP (H=1) vs MTP (ours) vs naive MTP on the same Llama-style trunk, and optionally
MTP with another weighting vs uniform MTP.

Variants (each one optimizer step over `grad_accum` micro-batches, all tokens targets; `wmtp.bench.train_worker`):
    ntp        H=1 through the Trainer's path (`trainer_step`: `raw_step_weights` first when grad_accum > 1, then
               `forward_backward`, the same fused chunked CE as ours, so the ratios measure the extra heads only:
               a stricter baseline than HF's loss, which holds [B,T,V])
    mtp        H heads through the same path with `UniformWeight` (Meta's sequential per-head backward)
    naive_mtp  H heads: `model(input_ids)` materialises logits [B,T,H,V] in one graph, F.cross_entropy, one backward
    mtp_<w>    with `weighting` w ≠ uniform: H heads through the same path with w's WeightFn at its defaults (rho1
               reads a cached ref_ce; the critic is its stage 2: value head attached, value loss in the backward)
The step excludes the Trainer's gradient clipping and metrics (the same for every variant).

Timing protocol (a ratio must mean something on a machine shared with other processes):
    1. every variant runs in a fresh Python process of its own (memory peaks never mix), started one after
       another; each builds its model and AdamW and takes 2 warm-up steps, then waits;
    2. `rounds` rounds: in each, every variant in turn times `steps` optimizer steps (one block), the order
       rotated by one variant per round (`timing.round_orders`); only one process runs at a time;
    3. a variant's `step_s` is the median of all its rounds × steps raw times (`step_s_all`, per round in
       `step_s_rounds`, summarised in `step_s_stats`: min, quartiles, max); `step_cpu_s` the same on process CPU
       time of all threads (less disturbed by other processes on the same cores);
    4. each ratio (time_ratio, cpu_time_ratio, naive_time_ratio, weighting_time_ratio, weighting_cpu_time_ratio)
       is the ratio of medians; `<ratio>_stats` adds the ratio of minima and the per-round ratios with their
       spread (`timing.ratio_stats`); config.loadavg_1m holds the 1-minute load average before and after the
       run, config.loadavg_1m_rounds before each round and at the end.
Defaults (d=256, 4 layers, V=32000, T=1024; 6 rounds × 2 steps) take a few minutes on 2 idle cores.

Memory is the process's resident set size in MiB (1024² bytes): `peak_mem_mb` is the absolute peak RSS
(`ru_maxrss`) over the process up to its last timed step, so all variants include the same Python + torch +
transformers baseline (`rss_import_mb`, RSS before the model is built) and the same allocator behaviour;
`rss_state_mb` is the RSS after the first step (parameters + AdamW moments, gradients freed by zero_grad).
Differences of peaks are therefore what one variant needs beyond another. RSS also holds memory glibc's malloc
keeps after tensors are freed (fragmentation, raised mmap/trim thresholds), which differs between runs; so each
process also profiles one extra step after the timed ones and reports `tensor_peak_mb`, the peak of live tensor
bytes (parameters, buffers, AdamW state + the step's allocations), and the memory goal is reported on both
(`mem_goal_met`, `tensor_mem_goal_met`).

Goals (reported, not asserted):
    time_ratio = mtp.step_s / ntp.step_s ≤ flops_ratio (analytic matmul FLOPs, `matmul_flops_per_token`)
    extra_mem_mb = mtp.peak − ntp.peak ≤ extra_state_mb + 0.10 · ntp.peak, where extra_state_mb is the fp32
    parameters + gradients + two AdamW moments of the extra heads = 16 bytes × extra parameters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from wmtp.bench.timing import ratio_stats, round_orders, summarize

MIB = 1024**2
WARMUP_STEPS = 2
REPLY = "REPLY "  # the prefix of a worker's answer lines on stdout
VARIANTS = ("ntp", "mtp", "naive_mtp")
MEMORY_METHOD = (
    "peak_mem_mb: absolute peak RSS (ru_maxrss) of a fresh process per variant, MiB, including the shared "
    "python/torch/transformers baseline (rss_import_mb); warm-up steps included (same shapes as timed steps). "
    "tensor_peak_mb: peak live tensor bytes during one extra profiled step (no allocator effects)"
)
PROTOCOL = (
    "one process per variant (2 warm-up steps each); `rounds` rounds, each timing `steps` steps of every variant "
    "in turn, order rotated per round; medians over all timed steps, ratio of medians, per-round ratios as spread"
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


# ---- the parent: one process per variant, interleaved rounds, then ratios -------------------------------


def run_train_bench(
    *,
    vocab: int = 32000,
    seq: int = 1024,
    d_model: int = 256,
    n_layers: int = 4,
    n_heads: int = 4,
    batch: int = 1,
    steps: int = 2,
    rounds: int = 6,
    grad_accum: int = 1,
    seed: int = 0,
    weighting: str = "uniform",
) -> dict[str, Any]:
    """Step time and memory of NTP (H=1), our MTP (H=n_heads) and naive MTP, each in its own process, timed in
    `rounds` interleaved rounds of `steps` optimizer steps of `grad_accum` micro-batches of [batch, seq] tokens;
    with `weighting` ≠ uniform also MTP with that weighting (`mtp_<name>`) and `weighting_time_ratio` = its step
    time / uniform MTP's (the module docstring has the protocol).

    Returns a JSON-able dict: per-variant results ("ntp", "mtp", "naive_mtp", "mtp_<name>": step_s (median),
    step_s_stats, step_s_all, step_s_rounds, their CPU-time twins, peak_mem_mb, param_mb, …), the ratios with
    their `_stats`, the goal booleans and "config".
    """
    for name, value in (("batch", batch), ("steps", steps), ("rounds", rounds), ("grad_accum", grad_accum)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    from wmtp.registry import weighting_class

    weighting_class(weighting)  # an unknown name fails here, with the registered ones, not in a worker
    threads = _n_cores()
    common = dict(vocab=vocab, seq=seq, d_model=d_model, n_layers=n_layers, batch=batch, grad_accum=grad_accum,
                  seed=seed, threads=threads, warmup_steps=WARMUP_STEPS)  # fmt: skip
    plan = {"ntp": (1, "ours", "uniform"), "mtp": (n_heads, "ours", "uniform"), "naive_mtp": (n_heads, "naive", "uniform")}
    if weighting != "uniform":
        plan[f"mtp_{weighting}"] = (n_heads, "ours", weighting)
    params = {name: {**common, "n_heads": h, "mode": mode, "weighting": w} for name, (h, mode, w) in plan.items()}
    res, loads, orders = _interleaved(params, rounds=rounds, steps=steps)

    ntp, mtp, naive = res["ntp"], res["mtp"], res["naive_mtp"]
    weighted = {}
    if weighting != "uniform":
        weighted = {"weighting": weighting, **_ratios(res, f"mtp_{weighting}", "mtp", "weighting_time_ratio",
                                                      cpu_key="weighting_cpu_time_ratio")}  # fmt: skip

    cfg = model_config(d_model=d_model, n_layers=n_layers, n_heads=n_heads, seq=seq)
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
        **_ratios(res, "mtp", "ntp", "time_ratio", cpu_key="cpu_time_ratio"),
        "flops_ratio": flops_ratio,
        "mem_ratio": mtp["peak_mem_mb"] / ntp["peak_mem_mb"],
        "extra_mem_mb": extra_mem_mb,
        "extra_state_mb": extra_state_mb,
        "mem_budget_mb": mem_budget_mb,
        **_ratios(res, "naive_mtp", "ntp", "naive_time_ratio"),
        "naive_mem_ratio": naive["peak_mem_mb"] / ntp["peak_mem_mb"],
        "naive_extra_mem_mb": naive["peak_mem_mb"] - ntp["peak_mem_mb"],
        "time_goal_met": time_ratio <= flops_ratio,
        "mem_goal_met": extra_mem_mb <= mem_budget_mb,
        **tensor,
        **weighted,
        "config": {
            **common,
            "n_heads": n_heads,
            "steps": steps,
            "rounds": rounds,
            **{k: shape[k] for k in ("d_ff", "n_attn_heads", "n_kv_heads")},
            "tie_embeddings": cfg.tie_embeddings,
            "head1_is_trunk_layer": cfg.head1_is_trunk_layer,
            "chunk_tokens": chunk_tokens(),
            "extra_params": extra_params,
            "flops_per_token": {"ntp": flops_ntp, "mtp": flops_mtp},
            "memory": MEMORY_METHOD,
            "protocol": PROTOCOL,
            "round_orders": orders,
            "loadavg_1m": [loads[0], loads[-1]],
            "loadavg_1m_rounds": loads,
            "torch": ntp["torch"],
        },
    }


def _interleaved(
    params: dict[str, dict[str, Any]], *, rounds: int, steps: int
) -> tuple[dict[str, dict[str, Any]], list[float | None], list[list[str]]]:
    """Start one worker per variant (one after another), run the rounds, finish every worker. Returns each variant's
    result (the worker's final figures + its times), the load averages (before each round, then at the end) and the
    rounds' orders."""
    workers: dict[str, _Worker] = {}
    try:
        for name, p in params.items():
            workers[name] = _Worker(name, p)  # waits for its warm-up, so no two warm-ups share the cores
        orders = round_orders(list(params), rounds)
        blocks: dict[str, list[dict[str, list[float]]]] = {name: [] for name in params}
        loads = []
        for order in orders:
            loads.append(_load_1m())
            for name in order:
                blocks[name].append(workers[name].request(run=steps))
        loads.append(_load_1m())
        res = {name: {**workers[name].request(finish=1), **_times(blocks[name])} for name in params}
    finally:
        for worker in workers.values():
            worker.close()
    return res, loads, orders


def _times(blocks: list[dict[str, list[float]]]) -> dict[str, Any]:
    """A variant's timing entries from its rounds' blocks (wall and CPU times)."""
    out: dict[str, Any] = {}
    for key, field in (("step_s", "times"), ("step_cpu_s", "cpu_times")):
        per_round = [b[field] for b in blocks]
        flat = [t for r in per_round for t in r]
        stats = summarize(flat)
        out.update({key: stats["median"], f"{key}_stats": stats, f"{key}_all": flat, f"{key}_rounds": per_round})
    return out


def _ratios(res: dict[str, dict[str, Any]], num: str, den: str, key: str, *, cpu_key: str | None = None) -> dict:
    """{key: ratio of median wall step times num / den, key_stats: `ratio_stats`} and the same on CPU time."""
    out = {}
    for name, times in ((key, "step_s_rounds"), (cpu_key, "step_cpu_s_rounds")):
        if name is not None:
            stats = ratio_stats(res[num][times], res[den][times])
            out.update({name: stats["ratio"], f"{name}_stats": stats})
    return out


class _Worker:
    """One variant's process (`python -m wmtp.bench.train_worker`), driven one JSON request at a time."""

    def __init__(self, name: str, params: dict[str, Any]):
        self.name, self.params = name, params
        self.stderr = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty stderr cannot block it
        cmd = [sys.executable, "-m", "wmtp.bench.train_worker", json.dumps(params)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True)  # fmt: skip
        self._reply()  # {"ready": true} after the warm-up steps

    def request(self, **request: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def _reply(self) -> dict[str, Any]:
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY) :])
        code = self.proc.wait()
        self.stderr.seek(0)
        raise RuntimeError(f"benchmark worker {self.name} ({self.params}) exited with {code}:\n"
                           f"{self.stderr.read()[-4000:]}")  # fmt: skip

    def close(self) -> None:
        """Wait for the process to end (it does after `finish`); kill it if it still runs (an error elsewhere)."""
        if self.proc.poll() is None:
            self.proc.stdin.close()  # EOF: a waiting worker returns
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


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


# ---- helpers ---------------------------------------------------------------------------------------


def model_config(*, d_model: int, n_layers: int, n_heads: int, seq: int):
    """The ModelConfig of the benchmarked model (H = n_heads)."""
    from wmtp.config import ModelConfig

    return ModelConfig(n_heads=n_heads, d_model=d_model, n_layers=n_layers, max_seq_len=max(seq, 8))


def _d_ff(cfg) -> int:
    return cfg.d_ff or 64 * ((4 * cfg.d_model + 63) // 64)  # as MTPModel.from_config


def chunk_tokens() -> int:
    """The fused CE's chunk size: the training default (train.ce_chunk_tokens)."""
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
