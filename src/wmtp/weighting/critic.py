"""Verifiable-critic weighting (DESIGN §7): a value head learns the chance that a solution is correct from the
records' `is_correct`; the TD errors / GAE advantages of each target token become the weights of the heads
that predict it (head k at t: token t + o_k, o the model's head offsets, learnt in `attach` / `bind`). Two
stages: stage 1 (`pre_train`) pre-trains the value head on value loss alone and leaves the stage-1 critic's values
of every record as the anchor of stage 2's drift control; stage 2 is weighted MTP plus `value_coef` × value loss
(`aux_loss`). The math is in wmtp.weighting.critic_math (notation there); its options in critic_config.py.

Value head input: the trunk output z and, with `value_features=surprise` (default), the running maximum over the
completion so far of the model's own head-1 surprise −log p(x_j|x_<j) and excess surprise (surprise − entropy):
a buggy solution usually holds a token the model finds unlikely. On the demo (tiny preset, 200-step base) the
stage-1 validation AUC of V before the last token is ≈0.71 with these features and ≈0.50 (chance) without them,
whatever the head, length, learning rate, trunk learning rate or targets (README, issue 15 note).

Stage 1 runs `n_steps = ceil(pretrain_epochs · N_train / (batch_size · grad_accum))` optimizer steps (trunk frozen,
or at `pretrain_trunk_lr_scale · optim.lr`) on the trainer's data stream. Its last critic_eval row carries
`signal` (the AUC's 95% bootstrap CI lies above 0.5); without signal a warning goes to stderr, or with
`require_signal` the run stops (CriticHasNoSignal). At its end the values V(s_i) of every train and valid record
are stored once in run_dir/critic_anchor.safetensors (atomically; its sha256 is part of the checkpointed state).

Stage 2 gradients: the value loss reaches the value head only (z detached) unless `value_trunk_grad`, when it
also trains the trunk under the global gradient clip; the value head is clipped on its own to `value_grad_clip`
(its parameter group's `grad_clip`, left out of optim.grad_clip), or shares the global clip when that is None.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from wmtp.config import ConfigError
from wmtp.model.checkpoints import CheckpointError
from wmtp.model.mtp import MTPModel, TrunkContext
from wmtp.model.offsets import check_offsets
from wmtp.model.value_head import ValueHead
from wmtp.registry import register_weighting
from wmtp.train.state import sha256_file
from wmtp.weighting.base import RunContext, WeightFn
from wmtp.weighting.critic_config import CriticConfig
from wmtp.weighting.critic_math import (
    RunningMoments,
    auc,
    auc_bootstrap_ci,
    discounted_sums,
    explained_variance,
    gae,
    kstep_td,
    last_completion_token,
    running_max,
    shift_left,
    shift_right,
    td_errors,
    terminal_rewards,
)

if TYPE_CHECKING:
    from wmtp.train.trainer import Trainer

ANCHOR_FILE = "critic_anchor.safetensors"
SURPRISE_FEATURES = 2  # next_token_surprise: surprise, excess surprise


@torch.no_grad()
def next_token_surprise(model: MTPModel, z: Tensor, ctx: TrunkContext, *, chunk_tokens: int = 4096) -> Tensor:
    """Float[B,T,2]: at position j ≥ 1, head 1's surprise s_j = −log p(x_j | x_<j) and its excess over the
    prediction's entropy, s_j − H(p(·|x_<j)); 0 at j = 0. z: Float[B,T,D]; ctx must carry input_ids. Logits are
    computed chunk_tokens positions at a time."""
    h, ids = model.head_hidden(1, z, ctx), ctx.input_ids
    B, T, _ = h.shape
    out = torch.zeros(B, T, SURPRISE_FEATURES, dtype=torch.float32, device=h.device)
    step = max(1, chunk_tokens // B)
    for start in range(0, T - 1, step):
        end = min(start + step, T - 1)
        logp = torch.log_softmax((h[:, start:end] @ model.unembed.T).float(), dim=-1)  # predicts start+1..end
        surprise = -logp.gather(-1, ids[:, start + 1 : end + 1, None]).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(dim=-1)
        out[:, start + 1 : end + 1] = torch.stack([surprise, surprise - entropy], dim=-1)
    return out


class CriticHasNoSignal(ConfigError):
    """The stage-1 critic's validation AUC CI does not exclude chance (weighting.critic.require_signal=true): a
    setting to change, so the CLI prints it as an error without a traceback."""


@dataclass
class CriticEval:
    """Validation accumulator: value predictions V(s_{j−1}) and Monte-Carlo returns on completion tokens,
    the prediction before each row's last token with its label, and |V − V_anchor| when an anchor exists.
    With ground truth (batch["decisive"], batch["has_spans"]): on the completion tokens j of incorrect annotated
    records, −Â_j and |δ_j| and whether j is decisive."""

    preds: list[Tensor] = field(default_factory=list)
    targets: list[Tensor] = field(default_factory=list)
    last_scores: list[Tensor] = field(default_factory=list)
    labels: list[Tensor] = field(default_factory=list)
    drift: list[Tensor] = field(default_factory=list)
    loc_neg_adv: list[Tensor] = field(default_factory=list)
    loc_abs_td: list[Tensor] = field(default_factory=list)
    loc_decisive: list[Tensor] = field(default_factory=list)

    def result(self, prefix: str = "val_") -> dict[str, float]:
        """value_loss, explained_var, auc_last with its 95% bootstrap CI (auc_ci_low/high; records resampled
        within class, seed 0), drift; loc_auc_neg_adv / loc_auc_abs_td: ROC AUC of −Â_j / |δ_j| for decisive vs
        other completion tokens of incorrect annotated records (left out without both kinds of tokens)."""
        preds, targets = torch.cat(self.preds), torch.cat(self.targets)
        scores, labels = torch.cat(self.last_scores), torch.cat(self.labels)
        both = 0 < labels.sum() < len(labels)
        low, high = auc_bootstrap_ci(scores, labels) if both else (math.nan, math.nan)
        out = {
            f"{prefix}value_loss": (preds - targets).pow(2).mean().item(),
            f"{prefix}explained_var": explained_variance(preds, targets),
            f"{prefix}auc_last": auc(scores, labels) if both else math.nan,
            f"{prefix}auc_ci_low": low,
            f"{prefix}auc_ci_high": high,
        }
        if self.drift:
            out[f"{prefix}drift"] = torch.cat(self.drift).mean().item()
        decisive = torch.cat(self.loc_decisive) if self.loc_decisive else torch.zeros(0, dtype=torch.bool)
        if 0 < decisive.sum() < len(decisive):  # else undefined: left out of the row
            for name, parts in (("neg_adv", self.loc_neg_adv), ("abs_td", self.loc_abs_td)):
                out[f"{prefix}loc_auc_{name}"] = auc(torch.cat(parts), decisive)
        return out


@register_weighting("critic")
class CriticWeight(WeightFn):
    """Raw weights from the value head's TD errors or advantages (`weighting.critic.mode`), its value loss with
    drift control, its two stages and its validation metrics. `forward` gives the value head's outputs on z
    (outputs["values"] V_z, Float[B,T], and outputs["surprise"]); `values(outputs, batch)` combines them into
    V(s_i), Float[B,T], which every hook reads.

    reward_rate: fraction of correct training records (None: taken from the run's training records in `prepare`);
    with `reward_norm=zscore` terminal rewards become (r − μ)/σ with μ, σ the mean and std of their rewards.
    """

    Config = CriticConfig
    needs_values = True
    train_on = "all"
    supports_packing = False  # one reward per row
    pre_train_kinds = ("critic_train", "critic_eval")

    def __init__(self, cfg: CriticConfig | None = None, *, seed: int = 0, reward_rate: float | None = None):
        super().__init__(cfg, seed=seed)
        self.reward_correct: float | None = None
        self.reward_incorrect: float | None = None
        if reward_rate is not None or self.cfg.reward_norm == "none":
            self.set_reward_rate(reward_rate)
        self.moments = RunningMoments(self.cfg.adv_momentum)
        self.anchors: dict[str, Tensor] = {}
        self._stats: dict[str, float] = {}
        self.trainer: Trainer | None = None
        self.stage_steps = 0  # stage-1 length (set by bind)
        self.stage_step = 0  # stage-1 optimizer steps taken
        self.anchor_sha256: str | None = None
        self.value_head: ValueHead | None = None  # set by attach
        self.offsets: tuple[int, ...] | None = None  # the model's head_offsets (attach / bind); None: 1..H

    def set_reward_rate(self, reward_rate: float | None) -> None:
        """Terminal rewards of correct / incorrect records (z-scored with the correct rate `reward_rate`)."""
        cfg = self.cfg
        rc, ri = cfg.reward_correct, cfg.reward_incorrect
        if cfg.reward_norm == "zscore":
            mean = reward_rate * rc + (1 - reward_rate) * ri
            std = math.sqrt(reward_rate * (1 - reward_rate)) * abs(rc - ri)
            if std == 0:
                raise ValueError("reward_norm=zscore needs both correct and incorrect training records")
            rc, ri = (rc - mean) / std, (ri - mean) / std
        self.reward_correct, self.reward_incorrect = rc, ri

    # ---- run hooks ----------------------------------------------------------------------------------------

    def attach(self, model: MTPModel) -> None:
        n_features = SURPRISE_FEATURES if self.cfg.value_features == "surprise" else 0
        self.value_head = model.attach_value_head(self.cfg.value_head, n_features=n_features)
        self.offsets = model.head_offsets

    def param_groups(self, model: MTPModel) -> list[dict[str, Any]]:
        """The value head: no decay, its own peak lr `weighting.critic.lr` (stage 2 follows the schedule's shape)."""
        if model.value_head is None:
            return []
        group = {"params": list(model.value_head.parameters()), "weight_decay": 0.0, "name": "value",
                 "peak_lr": self.cfg.lr}
        if self.cfg.value_grad_clip is not None:  # clipped on its own, outside the global clip (Trainer)
            group["grad_clip"] = self.cfg.value_grad_clip
        return [group]

    def prepare(self, run: RunContext) -> None:
        if self.reward_correct is None:
            self.set_reward_rate(sum(r.is_correct for r in run.train) / len(run.train))

    def bind(self, trainer: Trainer) -> None:
        if trainer.model.value_head is None:
            raise ValueError("the critic weighting needs a model with a value head (CriticWeight.attach)")
        n_features = SURPRISE_FEATURES if self.cfg.value_features == "surprise" else 0
        if trainer.model.value_head.n_features != n_features:
            raise ValueError(f"value_features={self.cfg.value_features} needs a value head reading {n_features} "
                             f"features; the model's reads {trainer.model.value_head.n_features} (CriticWeight.attach)")
        self.trainer, self.value_head, self.offsets = trainer, trainer.model.value_head, trainer.model.head_offsets
        tc = trainer.cfg.train
        self.stage_steps = math.ceil(self.cfg.pretrain_epochs * len(trainer.train_data) / (tc.batch_size * tc.grad_accum))

    def forward(self, model: MTPModel, z: Tensor, ctx: TrunkContext) -> dict[str, Tensor]:
        """The value head's outputs (`head_outputs`) on a detached z unless value_trunk_grad (stage 2's value
        loss then reaches the trunk, under the trunk's gradient clip)."""
        return self.head_outputs(model, z, ctx, trunk_grad=self.cfg.value_trunk_grad)

    def head_outputs(self, model: MTPModel, z: Tensor, ctx: TrunkContext, *, trunk_grad: bool) -> dict[str, Tensor]:
        """{"values": the value head's V_z(s_i) Float[B,T] on z (detached unless trunk_grad)} and, with
        value_features=surprise, {"surprise": Float[B,T,2]} (next_token_surprise, no grad); `values` combines them."""
        out = {"values": model.values(z if trunk_grad else z.detach(), ctx)}
        if self.cfg.value_features == "surprise":
            out["surprise"] = next_token_surprise(model, z.detach(), ctx)
        return out

    def values(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        """V(s_i) Float[B,T] = V_z(s_i) + uᵀ·f_i, f_i the running maximum of outputs["surprise"] over the
        completion tokens j ≤ i (0 before the completion); V_z alone when outputs carry no surprise."""
        if "surprise" not in outputs:
            return outputs["values"]
        features = running_max(outputs["surprise"], batch["loss_mask"].bool())
        return outputs["values"] + self.value_head.feature_values(features)

    # ---- pieces -------------------------------------------------------------------------------------------

    def rewards(self, batch: dict[str, Any]) -> Tensor:
        if self.reward_correct is None:
            raise RuntimeError("reward_norm=zscore needs the training records' correct rate: prepare(run) or "
                               "CriticWeight(..., reward_rate=)")
        return terminal_rewards(
            batch["is_correct"], batch["loss_mask"],
            reward_correct=self.reward_correct, reward_incorrect=self.reward_incorrect,
        )

    def anchor_values(self, batch: dict[str, Any]) -> Tensor | None:
        """The stage-1 critic's V(s_i) for the batch's records, Float[B,T] (None before stage 2)."""
        if not self.anchors:
            return None
        mask = batch["attention_mask"].bool()
        out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        for b, record_id in enumerate(batch["ids"]):
            if record_id not in self.anchors:
                raise KeyError(f"no stage-1 anchor values for record {record_id!r}")
            out[b][mask[b]] = self.anchors[record_id].to(out.device)
        return out

    # ---- weights ------------------------------------------------------------------------------------------

    def weights(
        self, batch: dict[str, Any], valid: Tensor, ce: Tensor | None, outputs: dict[str, Tensor]
    ) -> Tensor:
        """Raw weights Float[B,T,H] ≥ 0 for the heads' targets j = t+o_k (training: exp_adv updates the running
        moments first, then whitens with them)."""
        return self.raw_weights(batch, valid, outputs, update=True)

    def validation_weights(
        self, batch: dict[str, Any], valid: Tensor, ce: Tensor | None, outputs: dict[str, Tensor]
    ) -> Tensor:
        """The weights of `weights` without state changes: exp_adv whitens with the current running moments."""
        return self.raw_weights(batch, valid, outputs, update=False)

    def raw_weights(self, batch: dict[str, Any], valid: Tensor, outputs: dict[str, Tensor], *, update: bool) -> Tensor:
        """Raw weights Float[B,T,H]; update: fold the batch's advantages into the running moments and set stats()."""
        cfg, H = self.cfg, valid.shape[-1]
        offsets = check_offsets(self.offsets, H, name="the model's head_offsets")
        values, mask = self.values(outputs, batch).detach().float(), batch["loss_mask"].bool()
        rewards = self.rewards(batch)
        delta = td_errors(rewards, values, mask, cfg.gamma)
        advantages = discounted_sums(delta, mask, cfg.gamma * cfg.lam)  # = gae(...)[0], sharing δ
        if cfg.mode == "kstep":
            weights = kstep_td(rewards, values, mask, cfg.gamma, H, offsets).abs()
        else:
            if cfg.mode == "abs_td":
                per_token = delta.abs()
            else:  # exp_adv (AWR): whitened by running moments, updated by training calls only
                if update:
                    self.moments.update(advantages[mask])
                per_token = torch.exp(self.moments.whiten(advantages) / cfg.beta).clamp(max=cfg.w_max)
            weights = torch.stack([shift_left(per_token, o) for o in offsets], dim=-1)
        if not cfg.lm_on_incorrect:
            weights = weights * batch["is_correct"].bool()[:, None, None]
        if not update:
            return weights.detach()
        adv = advantages[mask]
        self._stats = {
            "adv_mean": adv.mean().item() if adv.numel() else 0.0,
            "adv_std": adv.std(unbiased=False).item() if adv.numel() else 0.0,
            "td_abs_mean": delta[mask].abs().mean().item() if adv.numel() else 0.0,
        }
        return weights.detach()

    def stats(self) -> dict[str, float]:
        return dict(self._stats)

    # ---- value loss ---------------------------------------------------------------------------------------

    def value_loss(self, values: Tensor, batch: dict[str, Any], *, stage: int, n_positions: int) -> Tensor:
        """Σ over completion tokens of the squared error of V(s_{j−1}) against its target, / n_positions.

        values: Float[B,T] with grad. Targets (detached): Monte-Carlo returns (λ=1) or λ-returns in stage 1
        (`pretrain_target`), λ-returns in stage 2. Stage 2 adds drift control against the stage-1 critic's
        predictions a: PPO-style clipping max((v−R)², (a + clip(v−a, ±value_clip) − R)²) and
        anchor_coef·(v−a)².
        """
        cfg, mask = self.cfg, batch["loss_mask"].bool()
        lam = 1.0 if stage == 1 and cfg.pretrain_target == "mc" else cfg.lam
        _, returns = gae(self.rewards(batch), values.detach().float(), mask, cfg.gamma, lam)
        pred = shift_right(values.float())[mask]
        target = returns[mask]
        loss = (pred - target).pow(2)
        anchor = self.anchor_values(batch) if stage == 2 else None
        if anchor is not None:
            a = shift_right(anchor)[mask]
            if cfg.value_clip is not None:
                clipped = a + (pred - a).clamp(-cfg.value_clip, cfg.value_clip)
                loss = torch.maximum(loss, (clipped - target).pow(2))
            if cfg.anchor_coef > 0:
                loss = loss + cfg.anchor_coef * (pred - a).pow(2)
        return loss.sum() / max(n_positions, 1)

    def aux_loss(
        self, batch: dict[str, Any], outputs: dict[str, Tensor], *, n_tokens: int
    ) -> tuple[Tensor, dict[str, float]]:
        """Stage 2: value_coef × value loss. Its gradient reaches the value head and, with value_trunk_grad, the
        trunk through z (then under the global gradient clip with the MTP loss's); the value head's parameters
        have their own clip value_grad_clip unless it is None."""
        loss = self.value_loss(self.values(outputs, batch), batch, stage=2, n_positions=n_tokens)
        return self.cfg.value_coef * loss, {"value_loss": loss.item()}

    # ---- validation ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def accumulate_eval(self, acc: CriticEval, values: Tensor, batch: dict[str, Any]) -> None:
        """Add one validation batch (values: Float[B,T]) to `acc`; reads no running state and changes none."""
        cfg, mask = self.cfg, batch["loss_mask"].bool()
        values, rewards = values.float(), self.rewards(batch)
        _, mc_returns = gae(rewards, values, mask, cfg.gamma, 1.0)
        prev = shift_right(values)
        acc.preds.append(prev[mask].cpu())
        acc.targets.append(mc_returns[mask].cpu())
        last = last_completion_token(mask)
        has_last = last.any(dim=1)
        acc.last_scores.append(prev[last].cpu())
        acc.labels.append(batch["is_correct"].bool()[has_last].cpu())
        anchor = self.anchor_values(batch)
        if anchor is not None:
            acc.drift.append((prev - shift_right(anchor))[mask].abs().cpu())
        if "decisive" in batch and "has_spans" in batch:
            rows = batch["has_spans"].bool() & ~batch["is_correct"].bool()
            tokens = mask & rows[:, None]
            delta = td_errors(rewards, values, mask, cfg.gamma)
            advantages = discounted_sums(delta, mask, cfg.gamma * cfg.lam)
            acc.loc_neg_adv.append((-advantages)[tokens].cpu())
            acc.loc_abs_td.append(delta.abs()[tokens].cpu())
            acc.loc_decisive.append(batch["decisive"].bool()[tokens].cpu())

    def eval_start(self) -> CriticEval:
        return CriticEval()

    def eval_batch(self, acc: CriticEval, batch: dict[str, Any], outputs: dict[str, Tensor]) -> None:
        self.accumulate_eval(acc, self.values(outputs, batch), batch)

    def eval_result(self, acc: CriticEval) -> dict[str, float]:
        return acc.result()

    # ---- stage 1 --------------------------------------------------------------------------------------------

    def pre_train_steps(self) -> tuple[int, int]:
        return self.stage_step, self.stage_steps

    def pre_train(self, report: Callable[[str], None]) -> None:
        """Pre-train the value head to stage_steps (resuming where a checkpoint left off), then fix the anchor."""
        tr = self.trainer
        tc = tr.cfg.train
        while self.stage_step < self.stage_steps:
            row = self.stage1_step()
            last = self.stage_step == self.stage_steps
            if self.stage_step % tc.log_every == 0 or last:
                tr.metrics.write(row)
            if self.stage_step % tc.eval_every == 0 or last:
                evaluation = {"kind": "critic_eval", "step": self.stage_step, **tr.validate(lm=False)}
                if last:
                    evaluation["signal"] = evaluation["val_auc_ci_low"] > 0.5  # False for nan
                tr.metrics.write(evaluation)
                if last and not evaluation["signal"]:
                    self.no_signal(evaluation)
            if last:
                self.write_anchor()
            if self.stage_step % tc.ckpt_every == 0 or self.stage_step == self.stage_steps:
                tr.save()
            report(f"critic {row['value_loss']:.3f}")
        if self.anchor_sha256 is None:  # pretrain_epochs=0: the initial critic is the anchor
            self.write_anchor()

    def no_signal(self, evaluation: dict[str, Any]) -> None:
        """The stage-1 critic does not beat chance: a loud warning on stderr, or CriticHasNoSignal when
        require_signal (after its critic_eval row is written)."""
        message = (
            f"the stage-1 critic has no signal: validation AUC of V before the last token "
            f"{evaluation['val_auc_last']:.3f}, 95% bootstrap CI [{evaluation['val_auc_ci_low']:.3f}, "
            f"{evaluation['val_auc_ci_high']:.3f}] does not exclude 0.5 (chance); its weights are noise. Train it "
            "longer (weighting.critic.pretrain_epochs), from a better base model, or on more validation records."
        )
        if self.cfg.require_signal:
            self.trainer.metrics.flush()
            raise CriticHasNoSignal(message + " (weighting.critic.require_signal=true stops the run)")
        bar = "!" * 100
        print(f"{bar}\nWARNING: {message}\n{bar}", file=sys.stderr, flush=True)

    def stage1_step(self) -> dict[str, Any]:
        """One stage-1 optimizer step: value loss on grad_accum micro-batches (targets per pretrain_target)."""
        tr, cfg = self.trainer, self.cfg
        trunk_lr = cfg.pretrain_trunk_lr_scale * tr.cfg.optim.lr
        tr.set_lr(trunk_lr, by_name={"value": cfg.lr})

        def loss(batch: dict[str, Any], z: Tensor, ctx: TrunkContext, n_tokens: int) -> Tensor:
            values = self.values(self.head_outputs(tr.model, z, ctx, trunk_grad=trunk_lr > 0), batch)
            return self.value_loss(values, batch, stage=1, n_positions=n_tokens)

        total, grad_norm = tr.aux_step(loss, trunk_grad=trunk_lr > 0)
        self.stage_step += 1
        return {"kind": "critic_train", "step": self.stage_step, "value_loss": total, "grad_norm": grad_norm,
                "lr": cfg.lr}

    @property
    def anchor_path(self) -> Path:
        return self.trainer.run_dir / ANCHOR_FILE

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
        anchors: dict[str, Tensor] = {}
        for batch in tr.batches(records):
            with tr.autocast():
                z, ctx = tr.model.trunk_forward(batch["input_ids"], batch["attention_mask"])
            values = self.values(self.head_outputs(tr.model, z, ctx, trunk_grad=False), batch).cpu()
            mask = batch["attention_mask"].bool().cpu()
            for b, record_id in enumerate(batch["ids"]):
                anchors[record_id] = values[b][mask[b]].contiguous()
        tr.model.train(was_training)
        if tr.dist.is_main:  # every rank computed the same values; one writes them
            tmp = self.anchor_path.with_name(f".{ANCHOR_FILE}.tmp-{os.getpid()}")
            save_file(anchors, str(tmp))
            os.replace(tmp, self.anchor_path)
        tr.dist.barrier()
        self.anchor_sha256 = sha256_file(self.anchor_path)
        self.anchors = anchors

    # ---- state (resume) -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"stage_step": self.stage_step, "anchor_sha256": self.anchor_sha256,
                "moments": self.moments.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the stage-1 progress and running moments, and the anchor file (checked against its sha256)."""
        self.stage_step, self.anchor_sha256 = state["stage_step"], state["anchor_sha256"]
        self.moments.load_state_dict(state["moments"])
        self.anchors = {}
        if self.anchor_sha256 is not None:
            if not self.anchor_path.is_file():
                raise CheckpointError(f"{self.anchor_path} is missing; stage 2 of this run cannot resume without it")
            if sha256_file(self.anchor_path) != self.anchor_sha256:
                raise CheckpointError(f"{self.anchor_path} does not match the sha256 recorded in the checkpoint")
            self.anchors = load_file(str(self.anchor_path))
