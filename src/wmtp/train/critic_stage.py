"""The critic's stage 1 (value-head pre-training) and the stage-1 anchor it leaves for stage 2 (DESIGN §7).

Stage 1 runs `n_steps = ceil(pretrain_epochs · N_train / (batch_size · grad_accum))` optimizer steps of value
loss only (trunk frozen, or at `pretrain_trunk_lr_scale · optim.lr`), drawing batches from the trainer's data
stream. At its end the stage-1 critic's values V(s_i) of every train and valid record are stored once in
run_dir/critic_anchor.safetensors (atomically; its sha256 is part of the trainer state) and become the anchor
of stage 2's drift control and drift metric.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from wmtp.data.collate import collate
from wmtp.model.checkpoints import CheckpointError
from wmtp.train.distributed import sync_replicated_grads
from wmtp.train.state import sha256_file
from wmtp.weighting.base import WeightFn
from wmtp.weighting.critic import CriticWeight

if TYPE_CHECKING:
    from wmtp.train.trainer import Trainer

ANCHOR_FILE = "critic_anchor.safetensors"


def critic_of(weight_fn: WeightFn) -> CriticWeight | None:
    """The CriticWeight behind a weight function (itself, or the method a control resamples), else None."""
    for fn in (weight_fn, getattr(weight_fn, "base", None)):
        if isinstance(fn, CriticWeight):
            return fn
    return None


class CriticStage:
    """Stage-1 loop, anchor and critic state of one trainer."""

    def __init__(self, trainer: Trainer, critic: CriticWeight):
        if trainer.model.value_head is None:
            raise ValueError("the critic weighting needs a model with a value head (MTPModel.attach_value_head)")
        self.trainer, self.critic = trainer, critic
        tc = trainer.cfg.train
        per_step = tc.batch_size * tc.grad_accum
        self.n_steps = math.ceil(critic.cfg.pretrain_epochs * len(trainer.train_data) / per_step)
        self.step = 0
        self.anchor_sha256: str | None = None

    @property
    def anchor_path(self) -> Path:
        return self.trainer.run_dir / ANCHOR_FILE

    # ---- state ----------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "anchor_sha256": self.anchor_sha256, "weight_fn": self.critic.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.anchor_sha256 = state["step"], state["anchor_sha256"]
        self.critic.load_state_dict(state["weight_fn"])
        self.critic.anchors = {}
        if self.anchor_sha256 is not None:
            if not self.anchor_path.is_file():
                raise CheckpointError(f"{self.anchor_path} is missing; stage 2 of this run cannot resume without it")
            if sha256_file(self.anchor_path) != self.anchor_sha256:
                raise CheckpointError(f"{self.anchor_path} does not match the sha256 recorded in the checkpoint")
            self.critic.anchors = load_file(str(self.anchor_path))

    # ---- stage 1 --------------------------------------------------------------------------------------------

    def run(self, report: Callable[[str], None]) -> None:
        """Pre-train the value head to n_steps (resuming where a checkpoint left off), then fix the anchor."""
        tc = self.trainer.cfg.train
        while self.step < self.n_steps:
            row = self.train_step()
            if self.step % tc.log_every == 0 or self.step == self.n_steps:
                self.trainer.metrics.write(row)
            if self.step % tc.eval_every == 0 or self.step == self.n_steps:
                self.trainer.metrics.write(self.trainer.validate(lm=False))
            if self.step == self.n_steps:
                self.write_anchor()
            if self.step % tc.ckpt_every == 0 or self.step == self.n_steps:
                self.trainer.save()
            report(f"critic {row['value_loss']:.3f}")
        if self.anchor_sha256 is None:  # pretrain_epochs=0: the initial critic is the anchor
            self.write_anchor()

    def train_step(self) -> dict[str, Any]:
        """One stage-1 optimizer step: value loss on grad_accum micro-batches (targets per pretrain_target)."""
        tr, cfg = self.trainer, self.critic.cfg
        trunk_lr = cfg.pretrain_trunk_lr_scale * tr.cfg.optim.lr
        tr.set_lr(trunk_lr, value_lr=cfg.lr)
        micro = [tr.next_batch() for _ in range(tr.cfg.train.grad_accum)]
        n_positions = sum(int(b["loss_mask"].sum()) for b in micro)
        if tr.dist is not None:  # the value loss is a mean over the global batch's completion tokens
            n_positions = int(tr.dist.sum(n_positions)[0])
        total = 0.0
        for batch in micro:
            with torch.set_grad_enabled(trunk_lr > 0), tr.autocast():
                z, ctx = tr.model.trunk_forward(batch["input_ids"], batch["attention_mask"])
            loss = self.critic.value_loss(tr.model.values(z, ctx), batch, stage=1, n_positions=n_positions)
            loss.backward()
            total += loss.item()
        if tr.dist is not None:
            sync_replicated_grads(tr.model)
            total = tr.dist.sum(total)[0]
        grad_norm = tr.clip_grad_norm()
        tr.optimizer_step(total, grad_norm)
        self.step += 1
        return {"kind": "critic_train", "step": self.step, "value_loss": total, "grad_norm": grad_norm, "lr": cfg.lr}

    # ---- the anchor -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def write_anchor(self) -> None:
        """Store the current critic's V(s_i) of every train and valid record (by id) and use it as the anchor."""
        tr = self.trainer
        records = tr.train_data + tr.valid_data
        ids = [r.id for r in records]
        if len(set(ids)) != len(ids):
            raise ValueError("record ids must be unique across train and valid for the critic's anchor")
        was_training = tr.model.training
        tr.model.eval()
        anchors: dict[str, torch.Tensor] = {}
        size = tr.cfg.train.batch_size
        for i in range(0, len(records), size):
            batch = tr.to_device(collate(records[i : i + size], pad_id=tr.pad_id))
            with tr.autocast():
                z, ctx = tr.model.trunk_forward(batch["input_ids"], batch["attention_mask"])
            values = tr.model.values(z, ctx).cpu()  # outside autocast, as in training and validation
            mask = batch["attention_mask"].bool().cpu()
            for b, record_id in enumerate(batch["ids"]):
                anchors[record_id] = values[b][mask[b]].contiguous()
        tr.model.train(was_training)
        if tr.dist is None or tr.dist.is_main:  # every rank computed the same values; one writes them
            tmp = self.anchor_path.with_name(f".{ANCHOR_FILE}.tmp-{os.getpid()}")
            save_file(anchors, str(tmp))
            os.replace(tmp, self.anchor_path)
        if tr.dist is not None:
            tr.dist.barrier()
        self.anchor_sha256 = sha256_file(self.anchor_path)
        self.critic.anchors = anchors
