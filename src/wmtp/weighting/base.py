"""The WeightFn plug-in interface, weight normalisation and weight statistics (DESIGN §6–§7).

A weighting is one file: a `WeightFn` subclass with a nested pydantic `Config`, registered with
`@register_weighting("name")` (wmtp.registry). The trainer, the step and the run builder call the hooks
below for every weighting and name none; each hook is a no-op unless overridden, except `weights`.

    class Config                        weighting.<name>.<field> (extra keys rejected)
    needs_ce / needs_values             weights() reads the detached CE / the outputs of forward()
    needs_grad_norm                     weights() reads outputs["logit_grad_norm"]: ‖∂ce/∂logits_k‖₂ per (t,k)
    has_local_weights() + local_extras  the weight at (t,k) depends only on position t's heads: the step computes
      + local_weights                   the CE, the weights and the gradient in one pass over chunks of positions
      (+ local_weights_are_logs())      (log-weights up to one constant per micro-batch: a softmax over the batch)
    train_on                            "all": learns from incorrect records too (data.train_on=all is required,
                                        and sweeps set it); None: the user's data.train_on
    supports_packing                    False: needs one record per row (data.pack=true is refused)
    uses_reference                      Config has `reference` (a next-token model whose CE the sweep trains and
                                        `wmtp score-ref` caches)
    is_control                          resamples the weights of `weighting.control_of` (random / shuffled)
    pre_train_kinds / report_ignores    metrics kinds its pre-training stage writes; Config fields that say where,
                                        not what (left out of report grouping)

Run order: from_config → attach(model) (extra modules; param_groups adds their optimizer groups) → prepare(run)
(references, caches, statistics of the training data) → bind(trainer) → pre_train (a stage before the main loop) → per
optimizer step begin_step(step), then per micro-batch forward(model, z, ctx) → weights(batch, valid, ce, outputs)
→ aux_loss(batch, outputs) → stats(); with local weights (has_local_weights(): the step's one pass), local_extras(batch,
valid) per micro-batch and local_weights(ce, valid, extras, outputs) per chunk of positions replace `weights`.
Validation: eval_start / eval_batch / eval_result, and validation_weights (weights without state changes). Resume:
state_dict.
The trainer normalises, clips and detaches the raw weights; invalid entries are 0.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from wmtp.config import ConfigError, RunConfig, WeightingConfig
from wmtp.data.collate import EncodedRecord
from wmtp.data.dataset import PreparedData
from wmtp.model.mtp import MTPModel, TrunkContext


class NoOptions(BaseModel):
    """The Config of a weighting without settings."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


@dataclass
class RunContext:
    """What `prepare` sees of the run being built; it may replace `train`/`valid` (e.g. records carrying ref_ce)
    and add provenance to `meta` (written to meta.json)."""

    cfg: RunConfig
    data: PreparedData
    train: list[EncodedRecord]
    valid: list[EncodedRecord]
    device: torch.device
    meta: dict[str, Any] = field(default_factory=dict)


class WeightFn(ABC):
    """Raw per-(t,k) weights w: Float[B,T,H] ≥ 0 and the hooks of one weighting (module docstring)."""

    Config: ClassVar[type[BaseModel]] = NoOptions
    name: ClassVar[str] = ""  # set by register_weighting
    needs_ce: ClassVar[bool] = False
    needs_values: ClassVar[bool] = False
    needs_grad_norm: ClassVar[bool] = False
    train_on: ClassVar[str | None] = None
    supports_packing: ClassVar[bool] = True
    uses_reference: ClassVar[bool] = False
    is_control: ClassVar[bool] = False
    pre_train_kinds: ClassVar[tuple[str, ...]] = ()
    report_ignores: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: BaseModel | None = None, *, seed: int = 0):
        self.cfg = cfg if cfg is not None else self.Config()
        self.seed = seed

    # ---- construction and checks --------------------------------------------------------------------------

    @classmethod
    def from_config(cls, wcfg: WeightingConfig, *, seed: int) -> WeightFn:
        """The instance a run with `wcfg` uses (its own section `weighting.<name>`); seed: the run seed."""
        return cls(wcfg.section(cls.name), seed=seed)

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Refuse settings this weighting cannot train with (ConfigError naming the keys); called at validation
        with the class whose declarations the run follows. The default checks `train_on` and packing."""
        name = cfg.weighting.name
        if cls.train_on is not None and cfg.data.train_on != cls.train_on:
            raise ConfigError(
                f"weighting.name={name} ({cls.name}) learns from correct and incorrect records: "
                f"set data.train_on={cls.train_on} (got {cfg.data.train_on!r})"
            )
        if cfg.data.pack and not cls.supports_packing:
            raise ConfigError(f"data.pack=true cannot be used with weighting.name={name} ({cls.name}): it needs one "
                              "record per row; set data.pack=false")

    # ---- hooks (no-ops unless overridden) -------------------------------------------------------------------

    def attach(self, model: MTPModel) -> None:
        """Add extra modules to the model (saved and sharded with it), before the optimizer is built."""

    def param_groups(self, model: MTPModel) -> list[dict[str, Any]]:
        """Optimizer groups of the attached modules (AdamW group dicts; a `peak_lr` follows the schedule's shape,
        `name` identifies the group); their parameters leave the model's default groups."""
        return []

    def prepare(self, run: RunContext) -> None:
        """Build what the weights need from the run's data: references, caches, statistics."""

    def bind(self, trainer: Any) -> None:
        """The wmtp.train.trainer.Trainer this weighting trains with, once, before any resume (a weighting with a
        stage or files of its own keeps it: its data stream, aux_step, validate, save, run_dir, dist)."""

    def pre_train_steps(self) -> tuple[int, int]:
        """(done, total) optimizer steps of the stage `pre_train` runs before the main loop ((0, 0): none)."""
        return 0, 0

    def pre_train(self, report: Callable[[str], None]) -> None:
        """The stage before the main loop, resuming where its checkpoint left off; report(text) updates the
        progress bar."""

    def begin_step(self, step: int) -> None:
        """Before the micro-batches of optimizer step `step` (0-based; restored on resume)."""

    def forward(self, model: MTPModel, z: Tensor, ctx: TrunkContext) -> dict[str, Tensor]:
        """Outputs of attached modules on the trunk output z: Float[B,T,D] (with their graph), e.g. values."""
        return {}

    @abstractmethod
    def weights(
        self, batch: dict[str, Any], valid: Tensor, ce: Tensor | None, outputs: dict[str, Tensor]
    ) -> Tensor:
        """Raw weights Float[B,T,H] (≥ 0; values at invalid entries are ignored). batch: collated (DESIGN §3);
        valid: Bool[B,T,H]; ce: detached Float[B,T,H] when needs_ce, else None; outputs: forward's, detached, and
        with needs_grad_norm "logit_grad_norm": Float[B,T,H] = ‖softmax(logits_k) − onehot(target)‖₂ (0 where
        invalid), computed in the no-grad CE pass."""

    def has_local_weights(self) -> bool:
        """Whether the weights are *local*: w[t,k] is a function of position t's ce[t,·], valid[t,·], the extras at t
        (`local_extras`) and, with needs_grad_norm, logit_grad_norm[t,·] — nothing else of the batch or the step.
        Then the step runs one pass (wmtp.train.step.one_pass): every head's logits once per chunk of positions,
        the CE, `local_weights` and the weighted gradient, with no no-grad head pass before it and, under gradient
        accumulation or several ranks, no no-grad trunk pass; `mean` normalisation (one scalar n_valid/Σw) scales
        the gradient at the end. Must be False for a weighting with an aux loss, state that `weights` reads across
        the batch, or needs_values. A weighting returning True implements `local_weights` and `weights` (the
        reference form); both must agree."""
        return False

    def local_extras(self, batch: dict[str, Any], valid: Tensor) -> dict[str, Tensor]:
        """Per-(b,t) inputs of `local_weights`, each Tensor[B,T,...] (e.g. rho1's ref_ce at t+k: Float[B,T,H]),
        computed once per micro-batch; the step hands local_weights their rows at the chunk's positions."""
        return {}

    def local_weights(
        self, ce: Tensor, valid: Tensor, extras: dict[str, Tensor], outputs: dict[str, Tensor]
    ) -> Tensor:
        """Raw weights Float[n,H] (≥ 0) of n positions from their ce: detached Float[n,H] (0 where invalid), valid:
        Bool[n,H], extras: local_extras' rows [n,...] at those positions, outputs: {"logit_grad_norm": Float[n,H]}
        when needs_grad_norm. Called once per chunk, in position order; equal to `weights` at those positions."""
        raise NotImplementedError(f"{type(self).__name__} declares local weights but has no local_weights")

    def local_weights_are_logs(self) -> bool:
        """Whether `local_weights` gives log-weights (−inf: weight 0) defined up to one additive constant over the
        micro-batch, as a softmax over the whole batch is (w = c · exp(s) with c = n_valid/Σ exp(s)). The step
        exponentiates them against the running max of the chunks seen so far (rescaling earlier chunks' weights,
        coefficients and gradients when it grows: exact online max-rescaling), then normalises the micro-batch to its
        own valid count under `mean` (its constant is the micro-batch's, as in `weights`); under `per_position` the
        constant cancels."""
        return False

    def validation_weights(
        self, batch: dict[str, Any], valid: Tensor, ce: Tensor | None, outputs: dict[str, Tensor]
    ) -> Tensor:
        """The raw weights `weights` gives a validation batch, changing no state (running statistics, RNG, step
        counters): the trainer's localisation metrics read them. Override when `weights` updates state."""
        return self.weights(batch, valid, ce, outputs)

    def aux_loss(
        self, batch: dict[str, Any], outputs: dict[str, Tensor], *, n_tokens: int
    ) -> tuple[Tensor, dict[str, float]] | None:
        """An extra loss back-propagated with the MTP loss (through `outputs`), and its metrics (summed over
        micro-batches and ranks); n_tokens: loss-carrying tokens of the whole step."""
        return None

    def stats(self) -> dict[str, float]:
        """Metrics of the current step, merged into its row (e.g. rho1's excess_h{k})."""
        return {}

    def eval_start(self) -> Any:
        """A validation accumulator (None: the weighting has no validation metrics)."""
        return None

    def eval_batch(self, acc: Any, batch: dict[str, Any], outputs: dict[str, Tensor]) -> None:
        """Add one validation batch to `acc`; changes no running state."""

    def eval_result(self, acc: Any) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` (on resume)."""


def normalize_weights(
    weights: Tensor,
    valid: Tensor,
    *,
    mode: str,
    clip_min: float | None = None,
    clip_max: float | None = None,
    totals: tuple[float, int] | None = None,
    check: bool = True,
) -> Tensor:
    """Normalise raw weights over the valid entries, then clip; returns detached Float[B,T,H], 0 where invalid.

    mode "mean": w ← w · n_valid / Σ_valid w (mean over valid entries is 1; uniform ⇒ 1). `totals` =
    (Σ_valid w, n_valid) of the whole step when this tensor is one micro-batch of it (gradient accumulation).
    mode "per_position": w[t,k] ← w[t,k] · n_valid(t) / Σ_k w[t,k] (Σ_k w = number of valid heads at t).
    An all-zero group (nothing to normalise) stays zero. Any leading shape works for per_position ([n,H] too).
    check=False leaves the (host-synchronising) w ≥ 0 check to the caller.
    """
    w = torch.where(valid, weights.detach().float(), 0.0)
    if check and torch.any(w < 0):
        raise ValueError(f"weights must be >= 0, got min {w.min().item():.4g}")
    if mode == "mean":
        total, count = totals if totals is not None else (w.sum().item(), int(valid.sum()))
        w = w * (count / total) if total > 0 else w
    elif mode == "per_position":
        total = w.sum(dim=-1, keepdim=True)  # [B,T,1]
        count = valid.sum(dim=-1, keepdim=True)
        w = torch.where(total > 0, w * count / total.clamp(min=torch.finfo(w.dtype).tiny), 0.0)
    else:
        raise ValueError(f"unknown normalisation {mode!r}; allowed: mean, per_position")
    if clip_min is not None or clip_max is not None:
        w = torch.where(valid, w.clamp(min=clip_min, max=clip_max), 0.0)
    return w


HIST_EDGES = [i / 8 for i in range(33)]  # 0, 0.125, …, 4: normalised weights (mean 1)


def weight_histogram(weights: Tensor, valid: Tensor, *, edges: list[float] = HIST_EDGES) -> dict[str, list]:
    """Per-head histogram of normalised weights on valid entries: {"edges": [...], "counts_h{k}": [...]}.

    weights: Float[B,T,H] or [N,H]; valid: Bool of the same shape. Bin i is [edges[i], edges[i+1]); values
    at or above the last edge count in the last bin (their maximum is logged per step as w_max).
    """
    w, v = weights.detach().float().reshape(-1, weights.shape[-1]), valid.bool().reshape(-1, valid.shape[-1])
    bounds = torch.tensor(edges, dtype=torch.float32)
    out: dict[str, list] = {"edges": list(edges)}
    for k in range(w.shape[-1]):
        x = w[:, k][v[:, k]].cpu()
        idx = (torch.bucketize(x, bounds, right=True) - 1).clamp(0, len(edges) - 2)
        out[f"counts_h{k + 1}"] = torch.bincount(idx, minlength=len(edges) - 1).tolist()
    return out


def weight_stats(weights: Tensor, valid: Tensor, *, zero_tol: float = 1e-3) -> dict[str, float]:
    """Mean/std/max/entropy/fraction≈0 of the weights on valid entries (entropy of w / Σw, in nats)."""
    w = weights.detach().float()[valid]
    if w.numel() == 0:
        return {}
    p = w / w.sum() if w.sum() > 0 else torch.full_like(w, 1.0 / w.numel())
    entropy = -(p * torch.log(p.clamp(min=1e-30))).sum()
    return {
        "w_mean": w.mean().item(),
        "w_std": w.std(unbiased=False).item(),
        "w_max": w.max().item(),
        "w_entropy": entropy.item(),
        "w_frac_zero": (w < zero_tol).float().mean().item(),
    }
