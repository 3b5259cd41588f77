"""One variant of the training-step benchmark (`wmtp.bench.train`), in a process of its own.

`python -m wmtp.bench.train_worker '<json parameters>'` builds the model, AdamW and the micro-batches, runs the
warm-up steps, then answers the parent's requests on stdin, one JSON object a line:
    {"run": n}     time n more optimizer steps → {"times": [...], "cpu_times": [...], "losses": [...]}
    {"finish": 1}  → the variant's memory figures and identity (`Variant.result`), then exit
Each answer is one stdout line starting with `REPLY` (anything else on stdout is ignored). Between requests the
process waits on stdin and uses no CPU, so the parent can interleave timed blocks of all variants.

One optimizer step (`Variant.step`) of mode "ours" is `trainer_step`: the Trainer's path for `grad_accum`
micro-batches; of mode "naive" one graph with all heads' logits [B,T,H,V] per micro-batch.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from wmtp.bench.train import MIB, REPLY, chunk_tokens, model_config
from wmtp.config import OptimConfig, WeightingConfig
from wmtp.model.loss import IGNORE_INDEX
from wmtp.model.mtp import MTPModel
from wmtp.registry import build_weight_fn
from wmtp.train.optim import build_optimizer
from wmtp.train.distributed import Distributed
from wmtp.train.step import batch_targets, deferred_mean_factor, step_gradients
from wmtp.weighting.base import WeightFn

SINGLE_PROCESS = Distributed(rank=0, world_size=1, mesh=None)
CRITIC_REWARD_RATE = 0.5  # the batches' is_correct alternate 0, 1 (a run's `prepare` reads it from its records)


def trainer_step(
    model: MTPModel,
    optimizer: torch.optim.Optimizer,
    micro: list[dict[str, Any]],
    weight_fn: WeightFn,
    *,
    wcfg: WeightingConfig,
    step: int,
) -> float:
    """One optimizer step over the micro-batches `micro` as `Trainer.train_step` takes it on one process, through
    the same `step_gradients` (one pass or two passes, `mean` over the whole step), without its gradient clipping,
    metrics and device copies; then AdamW and zero_grad. Returns the step's loss."""
    H = model.n_heads
    weight_fn.begin_step(step)
    n_valid = sum(int(batch_targets(b, H, offsets=model.head_offsets)[1].sum()) for b in micro)
    n_tokens = sum(int(b["loss_mask"].sum()) for b in micro)
    results, defer_mean = step_gradients(model, micro, weight_fn=weight_fn, wcfg=wcfg, n_valid_step=n_valid,
                                         n_tokens_step=n_tokens, chunk_tokens=chunk_tokens(), dist=SINGLE_PROCESS)
    loss = sum(r.loss for r in results)
    if defer_mean:
        loss *= deferred_mean_factor(model, n_valid, sum(r.weight_total or 0.0 for r in results))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def naive_step(model: MTPModel, optimizer: torch.optim.Optimizer, micro: list[dict[str, Any]]) -> float:
    """Per micro-batch all heads' logits [B,T,H,V] in one graph, Σ CE over valid (t,k) / the step's valid entries
    (the uniform loss, as ours) and one backward; then AdamW and zero_grad. Returns the step's loss."""
    targets = [batch_targets(b, model.n_heads, offsets=model.head_offsets)[0] for b in micro]  # [B,T,H], -100 where invalid
    n_valid = sum(int((t != IGNORE_INDEX).sum()) for t in targets)
    loss = 0.0
    for batch, target in zip(micro, targets):
        logits = model(batch["input_ids"], batch["attention_mask"])  # [B,T,H,V]
        part = F.cross_entropy(logits.flatten(0, 2), target.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
        part = part / max(n_valid, 1)
        part.backward()
        loss += part.item()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def make_weight_fn(wcfg: WeightingConfig) -> WeightFn:
    """The WeightFn of `wcfg` (default settings): rho1 reads the batch's ref_ce (a cached reference); the critic's
    value loss joins the step as in stage 2 (no anchor yet)."""
    weight_fn = build_weight_fn(wcfg)
    if wcfg.name == "critic":
        weight_fn.set_reward_rate(CRITIC_REWARD_RATE)
    return weight_fn


class Variant:
    """One benchmarked variant in this process: the model (H = n_heads), AdamW, `grad_accum` random micro-batches
    of [batch, seq] tokens (all targets), and its optimizer step (`step`).

    params: vocab, seq, d_model, n_layers, n_heads, batch, grad_accum, seed, threads, mode ("ours" | "naive"),
    weighting (a registered name; "ours" only), warmup_steps."""

    def __init__(self, params: dict[str, Any]):
        torch.set_num_threads(params["threads"])
        torch.manual_seed(params["seed"])
        self.params = params
        self.rss_import_mb = rss_mb()
        cfg = model_config(d_model=params["d_model"], n_layers=params["n_layers"], n_heads=params["n_heads"],
                           seq=params["seq"])  # fmt: skip
        self.model = MTPModel.from_config(cfg, vocab_size=params["vocab"], pad_id=0, bos_id=1, eos_id=2).train()
        self.wcfg = WeightingConfig(name=params["weighting"])
        self.weight_fn = make_weight_fn(self.wcfg)
        self.weight_fn.attach(self.model)  # e.g. the critic's value head (a transformer block)
        self.optimizer = build_optimizer(self.model, OptimConfig(),
                                         extra_groups=self.weight_fn.param_groups(self.model))  # fmt: skip
        self.micro = [self._batch() for _ in range(params["grad_accum"])]
        self.steps_taken = 0
        self.losses: list[float] = []
        self.rss_state_mb: float | None = None

    def _batch(self) -> dict[str, Any]:
        B, T = self.params["batch"], self.params["seq"]
        batch = {"input_ids": torch.randint(0, self.params["vocab"], (B, T)),
                 "loss_mask": torch.ones(B, T, dtype=torch.bool),
                 "attention_mask": torch.ones(B, T, dtype=torch.bool),
                 "is_correct": (torch.arange(B) % 2).float()}  # fmt: skip
        if self.weight_fn.uses_reference:  # a cached reference: its CE of each token is one more batch tensor
            batch["ref_ce"] = torch.rand(B, T) * 4
        batch["record_weight"] = (torch.rand(B, 1) + 0.5).expand(B, T)  # per-record values (group's row weights)
        return batch

    def step(self) -> float:
        """One optimizer step; returns its loss (a float: a sync point)."""
        if self.params["mode"] == "naive":
            loss = naive_step(self.model, self.optimizer, self.micro)
        else:
            loss = trainer_step(self.model, self.optimizer, self.micro, self.weight_fn, wcfg=self.wcfg,
                                step=self.steps_taken)
        self.steps_taken += 1
        self.losses.append(loss)
        if self.rss_state_mb is None:
            self.rss_state_mb = rss_mb()  # params + AdamW moments now exist; grads were just freed
        return loss

    def timed(self, n: int) -> dict[str, list[float]]:
        """n more steps: their wall times (perf_counter), CPU times of all this process's threads, losses."""
        times, cpu_times, losses = [], [], []
        for _ in range(n):
            t0, c0 = time.perf_counter(), time.process_time()
            losses.append(self.step())
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
        return {"times": times, "cpu_times": cpu_times, "losses": losses}

    def result(self) -> dict[str, Any]:
        """Memory figures (peak RSS so far, then the live-tensor peak of one more profiled step) and identity."""
        peak_mem_mb = peak_rss_mb()  # read before the profiled step below can add to it
        n_params = sum(p.numel() for p in self.model.parameters())
        state = [v for s in self.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
        return {
            "peak_mem_mb": peak_mem_mb,
            "tensor_peak_mb": tensor_peak_mb([*self.model.parameters(), *self.model.buffers(), *state], self.step),
            "param_mb": 4 * n_params / MIB,
            "n_params": n_params,
            "rss_import_mb": self.rss_import_mb,
            "rss_state_mb": self.rss_state_mb,
            "loss_first": self.losses[0],
            "loss_last": self.losses[-1],
            "n_heads": self.model.n_heads,
            "mode": self.params["mode"],
            "torch": torch.__version__,
        }


def tensor_peak_mb(held: list[torch.Tensor], step_fn: Callable[[], Any]) -> float | None:
    """Peak bytes of live tensors during `step_fn()`, MiB, allocator-independent: the storages of `held` (parameters,
    buffers, AdamW state at the start) + the peak running sum of the profiler's allocation events during the call.
    None if this torch's profiler does not expose its memory events."""
    from torch.profiler import ProfilerActivity, profile

    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in held}
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step_fn()
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
    return (sum(storages.values()) + peak) / MIB


def rss_mb() -> float | None:
    """Current resident set size (Linux /proc), MiB; None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB
    except OSError:
        return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


def serve(params: dict[str, Any], requests, reply: Callable[[dict[str, Any]], None]) -> None:
    """Build the variant, take params["warmup_steps"] steps, reply {"ready": true}, then answer `requests` (JSON
    lines) until finish or EOF."""
    variant = Variant(params)
    for _ in range(params["warmup_steps"]):
        variant.step()
    reply({"ready": True})
    for line in requests:
        request = json.loads(line)
        if "run" in request:
            reply(variant.timed(int(request["run"])))
        elif "finish" in request:
            reply(variant.result())
            return
        else:
            raise ValueError(f"unknown request {request!r}")


def _main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m wmtp.bench.train_worker '<json parameters>'")
    serve(json.loads(argv[0]), sys.stdin, lambda r: print(REPLY + json.dumps(r), flush=True))


if __name__ == "__main__":
    _main(sys.argv[1:])
