"""The one training loop: any WeightFn, gradient accumulation, validation, atomic checkpoints, exact resume."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from wmtp.config import RunConfig, config_hash
from wmtp.data.collate import EncodedRecord, collate
from wmtp.model.mtp import MTPModel
from wmtp.train.device import peak_memory_mb, resolve_device
from wmtp.train.distributed import Distributed, apply_activation_checkpointing, init_distributed
from wmtp.train.optim import build_optimizer, kernel_choice, lr_at, restore_kernel_choice
from wmtp.train.run_dir import MetricsLog
from wmtp.train.state import latest_checkpoint
from wmtp.train.step import (batch_targets, check_head1_alignment, deferred_mean_factor, heads_ce_stats,
                             step_gradients)
from wmtp.train.warmup import freeze_trunk, thaw
from wmtp.weighting.base import WeightFn, normalize_weights, weight_histogram, weight_stats
from wmtp.weighting.localisation import EosShare, LocalisationAccumulator, defined


class TrainingDiverged(RuntimeError):
    """Too many steps with a non-finite loss or gradient."""


class Trainer:
    """Trains `model` on encoded records with the weights of `weight_fn`; writes into `run_dir`.

    The weighting is reached only through its hooks (wmtp.weighting.base): bind, param_groups, pre_train, begin_step,
    forward, weights, aux_loss, stats, eval_*, state_dict. Modules it attaches must be on `model` already.
    """

    def __init__(
        self,
        cfg: RunConfig,
        *,
        model: MTPModel,
        weight_fn: WeightFn,
        train_data: list[EncodedRecord],
        valid_data: list[EncodedRecord],
        pad_id: int,
        run_dir: Path,
    ):
        if len(train_data) < cfg.train.batch_size:
            raise ValueError(f"{len(train_data)} training records but train.batch_size={cfg.train.batch_size}")
        self.cfg = cfg
        self.device = resolve_device(cfg.train.device)
        self.model = model.to(self.device)
        if cfg.train.activation_checkpointing:
            apply_activation_checkpointing(self.model)
        self.dist: Distributed = init_distributed(cfg.distributed, self.device)  # world size 1: a no-op
        self.dist.shard(self.model, param_dtype=cfg.distributed.param_dtype)
        self.weight_fn = weight_fn
        self.train_data, self.valid_data, self.pad_id = train_data, valid_data, pad_id
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.optimizer = build_optimizer(model, cfg.optim, extra_groups=weight_fn.param_groups(model))
        self.metrics = MetricsLog(
            run_dir / "metrics.jsonl", enabled=self.is_main, tensorboard=run_dir / "tb" if cfg.train.tensorboard else None
        )
        self.step = 0  # optimizer steps taken (of the main loop)
        self.epoch = 0
        self.position = 0  # records consumed in the current epoch's permutation
        self.bad_steps = 0
        self.tokens_seen = 0
        self._order = self._permutation(0)
        weight_fn.bind(self)

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run directory (rank 0 under torchrun)."""
        return self.dist.is_main

    # ---- state --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "bad_steps": self.bad_steps,
            "tokens_seen": self.tokens_seen,
            "config_hash": config_hash(self.cfg),
            "weighting": self.weight_fn.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["config_hash"] != config_hash(self.cfg):
            raise ValueError(
                "the checkpoint was written with a different config (hash "
                f"{state['config_hash']} vs {config_hash(self.cfg)}); resume with the run's own config.yaml"
            )
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.bad_steps, self.tokens_seen = state["bad_steps"], state["tokens_seen"]
        self._order = self._permutation(self.epoch)
        self.weight_fn.load_state_dict(state["weighting"])

    @property
    def total_steps(self) -> int:
        """Optimizer steps taken in the weighting's pre-training stage and the main loop (names checkpoints)."""
        return self.step + self.weight_fn.pre_train_steps()[0]

    def save(self) -> Path:
        self.metrics.flush()
        return self.dist.save_checkpoint(
            self.run_dir / "checkpoints",
            model=self.model,
            optimizer=self.optimizer,
            trainer_state=self.state_dict(),
            keep=self.cfg.train.keep_checkpoints,
            name_step=self.total_steps,
        )

    def resume(self) -> bool:
        """Restore the latest checkpoint of the run, if any; metrics after it are dropped (rewritten)."""
        path = latest_checkpoint(self.run_dir / "checkpoints")
        if path is None:
            return False
        kernels = kernel_choice(self.optimizer)
        self.load_state_dict(self.dist.load_checkpoint(path, model=self.model, optimizer=self.optimizer))
        restore_kernel_choice(self.optimizer, kernels)  # this build's AdamW kernel, not the checkpoint's
        self.metrics.truncate_after(
            self.step, pre_train_step=self.weight_fn.pre_train_steps()[0], pre_train_kinds=self.weight_fn.pre_train_kinds
        )
        return True

    # ---- data ---------------------------------------------------------------------------------

    def _permutation(self, epoch: int) -> list[int]:
        """Record order of an epoch: a pure function of (seed, epoch), so resuming needs only the position."""
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.train_data), generator=g).tolist()

    def set_lr(self, lr: float, *, by_name: dict[str, float] | None = None) -> None:
        """lr for every parameter group, except a group named in `by_name` (that lr) and a group with a `peak_lr`
        of its own (a weighting's modules), which follows the schedule's shape: peak_lr · lr / optim.lr."""
        by_name = by_name or {}
        for group in self.optimizer.param_groups:
            if group.get("name") in by_name:
                group["lr"] = by_name[group["name"]]
            elif "peak_lr" in group:
                group["lr"] = group["peak_lr"] * lr / self.cfg.optim.lr
            else:
                group["lr"] = lr

    def next_batch(self) -> dict[str, Any]:
        size = self.cfg.train.batch_size
        if self.position + size > len(self._order):  # drop the ragged tail; start the next epoch
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        idx = self._order[self.position : self.position + size]
        self.position += size
        idx = idx[self.dist.batch_slice(size)]
        return self.to_device(collate([self.train_data[i] for i in idx], pad_id=self.pad_id))

    def batches(self, records: list[EncodedRecord], limit: int | None = None) -> Iterator[dict[str, Any]]:
        """`records` in order, train.batch_size at a time, collated on the device (at most `limit` batches)."""
        size = self.cfg.train.batch_size
        n_batches = math.ceil(len(records) / size) if limit is None else min(math.ceil(len(records) / size), limit)
        for i in range(n_batches):
            yield self.to_device(collate(records[i * size : (i + 1) * size], pad_id=self.pad_id))

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def autocast(self) -> AbstractContextManager:
        if self.cfg.train.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    # ---- loop ---------------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Run the weighting's pre-training stage (if any), then the main loop to train.max_steps; return the last
        validation row."""
        self.model.train()
        if self.total_steps == 0:  # not on resume (even mid pre-training): its forward would consume dropout RNG
            check_head1_alignment(self.model, self.to_device(collate(self.train_data[:2], pad_id=self.pad_id)))
        try:
            return self._train_loop()
        finally:
            self.metrics.close()  # the TensorBoard writer and its thread, when train.tensorboard

    def _train_loop(self) -> dict[str, Any]:
        tc = self.cfg.train
        last_eval: dict[str, Any] = {}
        with self._progress() as progress:
            task = progress.add_task("train", total=self.weight_fn.pre_train_steps()[1] + tc.max_steps,
                                     completed=self.total_steps)
            self.weight_fn.pre_train(lambda desc: progress.update(task, completed=self.total_steps, description=desc))
            while self.step < tc.max_steps:
                row = self.train_step()
                if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                    self.metrics.write(row)
                if self.step % tc.eval_every == 0 or self.step == tc.max_steps:
                    last_eval = self.validate()
                    self.metrics.write(last_eval)
                    self.metrics.write({"kind": "weights_hist", "step": self.step, **self.last_weights_hist})
                if self.step % tc.ckpt_every == 0 or self.step == tc.max_steps:
                    self.save()
                desc = f"loss {row['loss']:.3f}" + (f" · val {last_eval['val_loss']:.3f}" if last_eval else "")
                progress.update(task, completed=self.total_steps, description=desc)
        return last_eval

    def train_step(self) -> dict[str, Any]:
        """One optimizer step over grad_accum micro-batches; returns its metrics row."""
        tc, H = self.cfg.train, self.model.n_heads
        started = time.perf_counter()
        self.weight_fn.begin_step(self.step)
        lr = lr_at(self.step, cfg=self.cfg.optim, max_steps=tc.max_steps)
        self.set_lr(lr)
        frozen = freeze_trunk(self.model) if self.step < tc.heads_warmup_steps else []  # the heads warm-up

        # 1) micro-batches and the step's denominators: valid (t,k) entries (the MTP loss) and loss-carrying tokens
        #    (a weighting's aux loss), over every micro-batch and rank
        micro = [self.next_batch() for _ in range(tc.grad_accum)]
        n_valid, n_tokens = (int(n) for n in self.dist.sum(sum(self._n_valid(b) for b in micro),
                                                            sum(int(b["loss_mask"].sum()) for b in micro)))

        # 2) gradients per micro-batch (train/step.py: one pass or two passes; `mean` spans the whole step)
        results, defer_mean = step_gradients(
            self.model, micro, weight_fn=self.weight_fn, wcfg=self.cfg.weighting, n_valid_step=n_valid,
            n_tokens_step=n_tokens, chunk_tokens=tc.ce_chunk_tokens, dist=self.dist, autocast=self.autocast,
        )  # fmt: skip

        # 3) the step's metrics per micro-batch
        loss, ce_sum, count, step_tokens, raw_total = 0.0, torch.zeros(H), torch.zeros(H), 0, 0.0
        aux: dict[str, float] = {}
        weights, valids = [], []
        eos = EosShare()
        for batch, out in zip(micro, results):
            loss += out.loss
            raw_total += out.weight_total or 0.0
            for name, value in out.aux.items():
                aux[name] = aux.get(name, 0.0) + value
            ce_sum += out.ce.sum(dim=(0, 1)).cpu()
            count += out.valid.sum(dim=(0, 1)).cpu()
            eos.add(out.weights, out.valid, batch["loss_mask"], batch.get("segment_ids"),
                    self.model.head_offsets)
            weights.append(out.weights.flatten(0, 1).cpu())
            valids.append(out.valid.flatten(0, 1).cpu())
            step_tokens += int(batch["attention_mask"].sum())

        # replicated gradients and the step's metrics over the global batch (one process: unchanged)
        self.dist.sync_grads(self.model)
        loss, step_tokens, raw_total, *aux_totals = self.dist.sum(loss, step_tokens, raw_total, *aux.values())
        aux = dict(zip(aux, aux_totals))
        if defer_mean:  # the one pass's `mean` factor over the whole step
            factor = deferred_mean_factor(self.model, n_valid, raw_total)
            loss, weights = loss * factor, [w * factor for w in weights]  # eos shares are ratios: unchanged
        ce_sum, count = self.dist.sum_tensor(ce_sum), self.dist.sum_tensor(count)
        eos = EosShare(*self.dist.sum(*eos.totals()))
        self.tokens_seen += int(step_tokens)

        # 4) clip, finite check, step
        grad_norm = self.clip_grad_norm()
        finite = self.optimizer_step(loss, grad_norm)
        thaw(self.model, frozen)
        self.step += 1

        # 5) metrics
        elapsed = time.perf_counter() - started
        row: dict[str, Any] = {
            "kind": "train",
            "step": self.step,
            "loss": loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens_per_s": step_tokens / elapsed,
            "step_s": elapsed,
            "tokens_seen": self.tokens_seen,
            "peak_mem_mb": peak_memory_mb(self.device),
            "skipped": not finite,
            "bad_steps": self.bad_steps,
        }
        row.update({f"ce_h{k + 1}": (ce_sum[k] / count[k].clamp(min=1)).item() for k in range(H)})
        row.update(weight_stats(torch.cat(weights), torch.cat(valids)))
        row.update(defined(eos.result()))
        row.update(aux)
        row.update(self.weight_fn.stats())
        self.last_weights_hist = weight_histogram(torch.cat(weights), torch.cat(valids))
        return row

    def aux_step(self, loss_fn: Any, *, trunk_grad: bool) -> tuple[float, float]:
        """One optimizer step of a weighting's own loss alone (a pre-training stage) on grad_accum
        micro-batches: loss_fn(batch, z, ctx, n_tokens) → scalar Tensor, z: Float[B,T,D] (with its graph only when
        `trunk_grad`), n_tokens: loss-carrying tokens of the step. Returns (loss summed over micro-batches and
        ranks, gradient norm); a non-finite step is skipped and counted, as in train_step."""
        micro = [self.next_batch() for _ in range(self.cfg.train.grad_accum)]
        n_tokens = int(self.dist.sum(sum(int(b["loss_mask"].sum()) for b in micro))[0])
        total = 0.0
        for batch in micro:
            with torch.set_grad_enabled(trunk_grad), self.autocast():
                z, ctx = self.model.trunk_forward(batch["input_ids"], batch["attention_mask"], batch.get("segment_ids"))
            loss = loss_fn(batch, z, ctx, n_tokens)
            loss.backward()
            total += loss.item()
        self.dist.sync_grads(self.model)
        total = self.dist.sum(total)[0]
        grad_norm = self.clip_grad_norm()
        self.optimizer_step(total, grad_norm)
        return total, grad_norm

    def optimizer_step(self, loss: float, grad_norm: float) -> bool:
        """Step the optimizer when loss and gradient norm are finite, else skip and count the step (stop after
        train.max_bad_steps); zero the gradients either way. Returns whether the step was taken."""
        finite = math.isfinite(loss) and math.isfinite(grad_norm)
        if finite:
            self.optimizer.step()
        else:
            self.bad_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        if self.bad_steps > self.cfg.train.max_bad_steps:
            raise TrainingDiverged(
                f"{self.bad_steps} non-finite steps (train.max_bad_steps={self.cfg.train.max_bad_steps})"
            )
        return finite

    def _n_valid(self, batch: dict[str, Any]) -> int:
        return int(batch_targets(batch, self.model.n_heads, offsets=self.model.head_offsets)[1].sum())

    def clip_grad_norm(self) -> float:
        """Clip the gradients and return their norm before clipping, over all parameters. A parameter group with
        a `grad_clip` of its own (a weighting's module) is clipped to it on its own and left out of the global
        optim.grad_clip, which clips the others together."""
        own = [g for g in self.optimizer.param_groups if g.get("grad_clip") is not None]
        own_ids = {id(p) for g in own for p in g["params"]}
        squares = sum(self.dist.clip_grad_norm(g["params"], g["grad_clip"]) ** 2 for g in own)
        max_norm = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip is not None else float("inf")
        rest = [p for p in self.model.parameters() if id(p) not in own_ids]
        return math.sqrt(self.dist.clip_grad_norm(rest, max_norm) ** 2 + squares)

    @torch.no_grad()
    def validate(self, *, lm: bool = True) -> dict[str, Any]:
        """Per-head CE on the correct validation records (comparable across methods, whatever they train on), the
        localisation of the weighting's normalised weights on the annotated validation records (loc_auc_* /
        loc_lift_*, wmtp.weighting.localisation; only when batches carry `decisive` and some row has spans), and
        the weighting's validation metrics (eval_* hooks) on all validation records. No gradient, RNG, data-order
        or running-statistics changes. lm=False: the weighting's metrics only (a row without kind and step)."""
        was_training = self.model.training
        self.model.eval()
        H, needs_ce, needs_values = self.model.n_heads, self.weight_fn.needs_ce, self.weight_fn.needs_values
        ce_sum, count = torch.zeros(H, dtype=torch.float64), torch.zeros(H, dtype=torch.float64)
        acc = self.weight_fn.eval_start()
        loc = LocalisationAccumulator(H, self.model.head_offsets)
        for batch in self.batches(self.valid_data, self.cfg.train.eval_batches):
            localise = lm and "decisive" in batch and "has_spans" in batch and bool(batch["has_spans"].any())
            with self.autocast():
                z, ctx = self.model.trunk_forward(batch["input_ids"], batch["attention_mask"])
                if lm:
                    targets, valid = batch_targets(batch, H, offsets=self.model.head_offsets)
                    on_correct = valid & batch["is_correct"].bool()[:, None, None]
                    norm_needed = localise and self.weight_fn.needs_grad_norm
                    # one pass of every head: the correct records' CE, and the incorrect records' too when the
                    # localised weights read the CE or the logit-gradient norm
                    rows = valid if localise and (needs_ce or norm_needed) else on_correct
                    ce, logit_norm = heads_ce_stats(self.model, z, ctx, targets, rows, grad_norm=norm_needed,
                                                    chunk_tokens=self.cfg.train.ce_chunk_tokens)  # fmt: skip
                    ce_sum += torch.where(on_correct, ce, 0.0).sum(dim=(0, 1)).double().cpu()
                    count += on_correct.sum(dim=(0, 1)).double().cpu()
            reads_outputs = acc is not None or (localise and needs_values)
            outputs = self.weight_fn.forward(self.model, z, ctx) if reads_outputs else {}
            if acc is not None:
                self.weight_fn.eval_batch(acc, batch, outputs)
            if localise:
                seen = {k: v.detach() for k, v in outputs.items()} if needs_values else {}
                if self.weight_fn.needs_grad_norm:
                    seen["logit_grad_norm"] = logit_norm
                self._add_localisation(loc, batch, valid, ce if needs_ce else None, seen)
        self.model.train(was_training)
        row: dict[str, Any] = {}
        if lm:
            row = {"kind": "eval", "step": self.step}
            per_head = ce_sum / count.clamp(min=1)
            row["val_loss"] = (ce_sum.sum() / count.sum().clamp(min=1)).item()
            row.update({f"val_ce_h{k + 1}": per_head[k].item() for k in range(H)})
            if loc.n_rows:
                row.update(defined(loc.result()))
        if acc is not None:
            row.update(self.weight_fn.eval_result(acc))
        return row

    def _add_localisation(
        self, loc: LocalisationAccumulator, batch: dict[str, Any], valid: torch.Tensor, ce: torch.Tensor | None,
        outputs: dict[str, torch.Tensor],
    ) -> None:
        """Add a validation batch's weights to `loc`: the weighting's validation_weights (outputs: what `weights`
        reads, detached), normalised and clipped over the batch's valid entries as train_step does (one micro-batch)."""
        wcfg = self.cfg.weighting
        raw = self.weight_fn.validation_weights(batch, valid, ce, outputs)
        w = normalize_weights(raw, valid, mode=wcfg.normalize, clip_min=wcfg.clip_min, clip_max=wcfg.clip_max)
        loc.add(w, valid, batch["decisive"], batch["has_spans"], batch["is_correct"])

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            disable=not self.cfg.train.progress or not self.is_main,
        )
