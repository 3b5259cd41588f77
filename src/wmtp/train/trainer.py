"""The one training loop: any WeightFn, gradient accumulation, validation, atomic checkpoints, exact resume."""

from __future__ import annotations

import math
import resource
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from wmtp.config import RunConfig, config_hash
from wmtp.data.collate import EncodedRecord, collate
from wmtp.model.mtp import MTPModel
from wmtp.train.optim import build_optimizer, lr_at
from wmtp.train.run_dir import MetricsLog
from wmtp.train.state import latest_checkpoint, load_checkpoint, save_checkpoint
from wmtp.train.critic_stage import CriticStage, critic_of
from wmtp.train.distributed import (
    Distributed,
    apply_activation_checkpointing,
    apply_fsdp,
    init_distributed,
    is_dcp_checkpoint,
    load_checkpoint_dcp,
    save_checkpoint_dcp,
    sync_replicated_grads,
    world_size_from_env,
)
from wmtp.train.distributed import clip_grad_norm as clip_grad_norm_sharded
from wmtp.train.step import batch_targets, check_head1_alignment, forward_backward, heads_ce, raw_step_weights
from wmtp.weighting.base import WeightFn, weight_histogram, weight_stats
from wmtp.weighting.critic import CriticEval


class TrainingDiverged(RuntimeError):
    """Too many steps with a non-finite loss or gradient."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available; use train.device=cpu or auto")
    return torch.device(name)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA allocator peak, or the process's max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Trainer:
    """Trains `model` on encoded records with the weights of `weight_fn`; writes into `run_dir`."""

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
        self.dist: Distributed | None = None  # set under torchrun (world size > 1): FSDP, global reductions
        if world_size_from_env() > 1:
            self.dist = init_distributed(cfg.distributed, self.device)
            apply_fsdp(self.model, self.dist.mesh, param_dtype=cfg.distributed.param_dtype)
        self.weight_fn = weight_fn
        self.train_data, self.valid_data, self.pad_id = train_data, valid_data, pad_id
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.optimizer = build_optimizer(model, cfg.optim)
        self.metrics = MetricsLog(run_dir / "metrics.jsonl", enabled=self.is_main)
        self.step = 0  # optimizer steps taken
        self.epoch = 0
        self.position = 0  # records consumed in the current epoch's permutation
        self.bad_steps = 0
        self.tokens_seen = 0
        self._order = self._permutation(0)
        # The critic's stage 1 (value-head pre-training) runs before step 0 of weighted MTP (stage 2).
        critic = critic_of(weight_fn)
        self.critic_stage = CriticStage(self, critic) if critic is not None else None

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run directory (rank 0 under torchrun)."""
        return self.dist is None or self.dist.is_main

    # ---- state --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "bad_steps": self.bad_steps,
            "tokens_seen": self.tokens_seen,
            "config_hash": config_hash(self.cfg),
        }
        if self.critic_stage is not None:
            state["critic"] = self.critic_stage.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["config_hash"] != config_hash(self.cfg):
            raise ValueError(
                "the checkpoint was written with a different config (hash "
                f"{state['config_hash']} vs {config_hash(self.cfg)}); resume with the run's own config.yaml"
            )
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.bad_steps, self.tokens_seen = state["bad_steps"], state["tokens_seen"]
        self._order = self._permutation(self.epoch)
        if self.critic_stage is not None:
            self.critic_stage.load_state_dict(state["critic"])

    @property
    def total_steps(self) -> int:
        """Optimizer steps taken in both stages (names checkpoints)."""
        return self.step + (self.critic_stage.step if self.critic_stage is not None else 0)

    def save(self) -> Path:
        if self.dist is not None:
            return save_checkpoint_dcp(
                self.run_dir / "checkpoints", env=self.dist, model=self.model, optimizer=self.optimizer,
                trainer_state=self.state_dict(), keep=self.cfg.train.keep_checkpoints, name_step=self.total_steps,
            )
        return save_checkpoint(
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
        if is_dcp_checkpoint(path):  # written under torchrun; loads on any number of ranks
            rank = self.dist.rank if self.dist is not None else 0
            state = load_checkpoint_dcp(path, model=self.model, optimizer=self.optimizer, rank=rank)
        else:
            state = load_checkpoint(path, model=self.model, optimizer=self.optimizer)
        self.load_state_dict(state)
        stage1_step = self.critic_stage.step if self.critic_stage is not None else None
        self.metrics.truncate_after(self.step, stage1_step=stage1_step)
        return True

    # ---- data ---------------------------------------------------------------------------------

    def _permutation(self, epoch: int) -> list[int]:
        """Record order of an epoch: a pure function of (seed, epoch), so resuming needs only the position."""
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.train_data), generator=g).tolist()

    def set_lr(self, lr: float, *, value_lr: float = 0.0) -> None:
        """lr for the MTP parameters, value_lr for the critic's value head (param group "value")."""
        for group in self.optimizer.param_groups:
            group["lr"] = value_lr if group.get("name") == "value" else lr

    def next_batch(self) -> dict[str, Any]:
        size = self.cfg.train.batch_size
        if self.position + size > len(self._order):  # drop the ragged tail; start the next epoch
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        idx = self._order[self.position : self.position + size]
        self.position += size
        if self.dist is not None:
            idx = idx[self.dist.batch_slice(size)]
        return self.to_device(collate([self.train_data[i] for i in idx], pad_id=self.pad_id))

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def autocast(self) -> AbstractContextManager:
        if self.cfg.train.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    # ---- loop ---------------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Run until train.max_steps; return the last validation row."""
        tc = self.cfg.train
        self.model.train()
        if self.total_steps == 0:  # not on resume (even mid stage 1): its forward would consume dropout RNG
            check_head1_alignment(self.model, self.to_device(collate(self.train_data[:2], pad_id=self.pad_id)))
        last_eval: dict[str, Any] = {}
        with self._progress() as progress:
            stage1 = self.critic_stage.n_steps if self.critic_stage is not None else 0
            task = progress.add_task("train", total=stage1 + tc.max_steps, completed=self.total_steps)
            if self.critic_stage is not None:
                self.critic_stage.run(lambda desc: progress.update(task, completed=self.total_steps, description=desc))
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
        begin_step = getattr(self.weight_fn, "begin_step", None)  # optional hook (weighting/base.py)
        if begin_step is not None:
            begin_step(self.step)
        lr = lr_at(self.step, cfg=self.cfg.optim, max_steps=tc.max_steps)
        critic = self.critic_stage.critic if self.critic_stage is not None else None
        self.set_lr(lr, value_lr=critic.cfg.lr * lr / self.cfg.optim.lr if critic is not None else 0.0)

        # 1) micro-batches and the step's valid-entry count (the loss denominator across accumulation)
        micro = [self.next_batch() for _ in range(tc.grad_accum)]
        n_valid = sum(self._n_valid(b) for b in micro)
        n_value = sum(int(b["loss_mask"].sum()) for b in micro) if critic is not None else 0
        if self.dist is not None:  # the loss denominators are the global batch's
            n_valid, n_value = (int(n) for n in self.dist.sum(n_valid, n_value))

        # 2) with several micro-batches, every raw weight first: `mean` normalisation spans the whole step
        raws: list[torch.Tensor | None] = [None] * len(micro)
        weight_total = None
        if len(micro) > 1 or self.dist is not None:
            raws = [
                raw_step_weights(
                    self.model, b, weight_fn=self.weight_fn, chunk_tokens=tc.ce_chunk_tokens, autocast=self.autocast()
                )
                for b in micro
            ]
            weight_total = sum(torch.where(batch_targets(b, H)[1], r, 0.0).sum().item() for b, r in zip(micro, raws))
            if self.dist is not None:
                weight_total = self.dist.sum(weight_total)[0]

        # 3) forward/backward per micro-batch (sequential heads inside)
        loss, ce_sum, count, value_loss, step_tokens = 0.0, torch.zeros(H), torch.zeros(H), 0.0, 0
        weights, valids = [], []
        for batch, raw in zip(micro, raws):
            out = forward_backward(
                self.model,
                batch,
                weight_fn=self.weight_fn,
                wcfg=self.cfg.weighting,
                n_valid_step=n_valid,
                chunk_tokens=tc.ce_chunk_tokens,
                autocast=self.autocast(),
                raw_weights=raw,
                weight_total_step=weight_total,
                critic=critic,
                value_positions_step=n_value,
            )
            loss += out.loss
            value_loss += out.value_loss or 0.0
            ce_sum += out.ce.sum(dim=(0, 1)).cpu()
            count += out.valid.sum(dim=(0, 1)).cpu()
            weights.append(out.weights.flatten(0, 1).cpu())
            valids.append(out.valid.flatten(0, 1).cpu())
            step_tokens += int(batch["attention_mask"].sum())

        if self.dist is not None:  # replicated gradients and the step's metrics over the global batch
            sync_replicated_grads(self.model)
            loss, value_loss, step_tokens = self.dist.sum(loss, value_loss, step_tokens)
            ce_sum, count = self.dist.sum_tensor(ce_sum), self.dist.sum_tensor(count)
        self.tokens_seen += int(step_tokens)

        # 4) clip, finite check, step
        grad_norm = self.clip_grad_norm()
        finite = self.optimizer_step(loss, grad_norm)
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
        if critic is not None:
            row["value_loss"] = value_loss
        last_stats = getattr(self.weight_fn, "last_stats", None)  # optional hook, e.g. rho1's excess_h{k}
        if last_stats is not None:
            row.update(last_stats())
        self.last_weights_hist = weight_histogram(torch.cat(weights), torch.cat(valids))
        return row

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
        return int(batch_targets(batch, self.model.n_heads)[1].sum())

    def clip_grad_norm(self) -> float:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not params:
            return 0.0
        max_norm = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip is not None else float("inf")
        if self.dist is not None:
            return clip_grad_norm_sharded(self.model, max_norm)
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    @torch.no_grad()
    def validate(self, *, lm: bool = True) -> dict[str, Any]:
        """Per-head CE on the correct validation records (comparable across methods, whatever they train on)
        and, with a critic, its value metrics on all validation records. No gradient, RNG, data-order or
        running-statistics changes. lm=False: critic metrics only (stage 1)."""
        was_training = self.model.training
        self.model.eval()
        H, size = self.model.n_heads, self.cfg.train.batch_size
        ce_sum, count = torch.zeros(H, dtype=torch.float64), torch.zeros(H, dtype=torch.float64)
        critic = self.critic_stage.critic if self.critic_stage is not None else None
        critic_acc = CriticEval()
        n_batches = math.ceil(len(self.valid_data) / size)
        if self.cfg.train.eval_batches is not None:
            n_batches = min(n_batches, self.cfg.train.eval_batches)
        for i in range(n_batches):
            batch = self.to_device(collate(self.valid_data[i * size : (i + 1) * size], pad_id=self.pad_id))
            with self.autocast():
                z, ctx = self.model.trunk_forward(batch["input_ids"], batch["attention_mask"])
                if lm:
                    targets, valid = batch_targets(batch, H)
                    valid &= batch["is_correct"].bool()[:, None, None]
                    ce = heads_ce(self.model, z, ctx, targets, valid, chunk_tokens=self.cfg.train.ce_chunk_tokens)
                    ce_sum += ce.sum(dim=(0, 1)).double().cpu()
                    count += valid.sum(dim=(0, 1)).double().cpu()
            if critic is not None:
                critic.accumulate_eval(critic_acc, self.model.values(z, ctx), batch)
        self.model.train(was_training)
        if lm:
            row: dict[str, Any] = {"kind": "eval", "step": self.step}
            per_head = ce_sum / count.clamp(min=1)
            row["val_loss"] = (ce_sum.sum() / count.sum().clamp(min=1)).item()
            row.update({f"val_ce_h{k + 1}": per_head[k].item() for k in range(H)})
        else:
            row = {"kind": "critic_eval", "step": self.critic_stage.step}
        if critic is not None:
            row.update(critic_acc.result())
        return row

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            disable=not self.cfg.train.progress or not self.is_main,
        )
