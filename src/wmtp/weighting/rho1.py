"""Rho-1 excess-loss weighting (Lin et al. 2024) for multi-token prediction (DESIGN §7).

Legend: B batch, T sequence, H heads. Head k at position t predicts token j = t + o_k (o: the model's
head_offsets, 1..H by default), so the reference's CE of that same token is ref_ce[t+o_k] (ref_ce[j]: reference
CE of token j given x_<j):

    excess[t,k] = ce[t,k] − ref_ce[t+o_k]          (excess="signed", Rho-1's original)
                  |ce[t,k] − ref_ce[t+o_k]|        (excess="abs", the proposal)

An entry is a *candidate* when it is valid and |excess| ≥ min_ce_diff. Entries that are not candidates get
weight exactly 0 under every transform: they are left out of the transform as if absent (out of the softmax:
weight 0, not exp(0)/Z; never selected by top-k), and each transform keeps its defining normalisation over the
candidates (Σ_k w = n_cand(t) at each t; mean 1 over the valid entries; round(p/100·n_valid) ones while there
are enough candidates). Transforms, over candidates only:

    softmax_heads   w[t,k] = n_cand(t) · exp(excess[t,k]/T) / Σ_{k' candidate at t} exp(excess[t,k']/T)
                    (n_cand(t): candidates at t, so Σ_k w[t,k] = n_cand(t))
    softmax_batch   w = n_valid · softmax over all candidates of the batch of excess/T       (mean 1 over valid)
    topk            w = 1 for the n = round(topk_percent / 100 · n_valid) candidates with the largest excess
                    (at most all candidates; n_valid counts every valid entry, candidates or not), else 0.
                    Ties are broken by flat index (b, t, k) order: the earlier entry wins. `round` is
                    Python's (half to even).

Equal excess everywhere gives equal weights (1 on every candidate, 0 elsewhere) under every transform, so
after the trainer's `normalize=mean` every candidate weighs the same. softmax_heads is scaled by n_cand(t) for
this: a plain per-position softmax (Σ_k w = 1) would give the last completion positions, which have fewer valid
heads (t + k runs past the record), up to H× more weight per entry after `mean` normalisation, a head-count
pattern the `shuffled` control would then scramble too. An entry dropped by min_ce_diff does not pass its share
to the other heads of its position.

The trainer then normalises (DESIGN §6). The batch is the micro-batch the WeightFn sees.

softmax_heads is local to a position: `local_weights` gives the weights of a chunk of positions inside the step's
one pass (wmtp.train.step); softmax_batch too, as log-weights excess/T whose normaliser the step applies (online
max-rescaling); topk needs the whole batch first and takes two passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from wmtp.config import ConfigError, RunConfig
from wmtp.model.mtp import MTPModel
from wmtp.model.offsets import check_offsets
from wmtp.registry import register_weighting
from wmtp.weighting.base import NoOptions, RunContext, WeightFn
from wmtp.weighting.reference_scores import with_reference

EXCESS_MODES = ("signed", "abs")
TRANSFORMS = ("softmax_heads", "softmax_batch", "topk")


def ref_ce_at_targets(ref_ce: Tensor, n_heads: int, offsets: Sequence[int] | None = None) -> Tensor:
    """ref_ce: Float[B,T] (token j) → Float[B,T,H] with [b,t,k-1] = ref_ce[b,t+o_k] (0 where t+o_k ≥ T);
    offsets o: the model's head_offsets (None = 1..n_heads, o_k = k)."""
    B, T = ref_ce.shape
    out = torch.zeros(B, T, n_heads, dtype=ref_ce.dtype, device=ref_ce.device)
    for k, o in enumerate(check_offsets(offsets, n_heads), start=1):
        if o < T:
            out[:, : T - o, k - 1] = ref_ce[:, o:]
    return out


def excess_loss(ce: Tensor, ref_ce: Tensor, *, excess: str, offsets: Sequence[int] | None = None) -> Tensor:
    """excess Float[B,T,H] (see the module docstring; offsets: the model's head offsets, None = 1..H); values at
    invalid entries are meaningless."""
    if excess not in EXCESS_MODES:
        raise ValueError(f"excess must be one of {EXCESS_MODES}, got {excess!r}")
    if ce.dim() != 3 or ref_ce.shape != ce.shape[:2]:
        raise ValueError(f"ce must be [B,T,H] and ref_ce [B,T], got {tuple(ce.shape)} and {tuple(ref_ce.shape)}")
    return _excess(ce.detach().float() - ref_ce_at_targets(ref_ce.detach().float(), ce.shape[2], offsets), excess)


def _excess(diff: Tensor, excess: str) -> Tensor:
    return diff.abs() if excess == "abs" else diff


def softmax_heads(x: Tensor, candidates: Tensor, *, temperature: float) -> Tensor:
    """n_cand(t) · softmax over the candidate heads at t of x/T; x, candidates: [..., H] (any leading shape)."""
    return _masked_softmax(x / temperature, candidates, dim=-1) * candidates.sum(dim=-1, keepdim=True)


def _masked_softmax(z: Tensor, keep: Tensor, dim: int | tuple[int, ...]) -> Tensor:
    """softmax of z over `dim` restricted to `keep`; exactly 0 outside `keep` and for groups with none kept."""
    z = torch.where(keep, z, float("-inf"))
    top = z.amax(dim=dim, keepdim=True)
    top = torch.where(torch.isfinite(top), top, 0.0)
    e = torch.where(keep, torch.exp(z - top), 0.0)
    total = e.sum(dim=dim, keepdim=True)
    return torch.where(total > 0, e / total.clamp(min=torch.finfo(e.dtype).tiny), 0.0)


def topk_mask(scores: Tensor, candidates: Tensor, count: int) -> Tensor:
    """Bool mask of the `count` candidates with the largest score; ties → the earlier flat index."""
    flat_scores, flat_cand = scores.flatten(), candidates.flatten()
    count = min(count, int(flat_cand.sum()))
    keep = torch.zeros_like(flat_cand)
    if count > 0:
        ranked = torch.where(flat_cand, flat_scores, float("-inf"))
        order = torch.sort(ranked, descending=True, stable=True).indices  # stable: equal scores keep index order
        keep[order[:count]] = True
    return keep.view_as(candidates) & candidates


def rho1_weights(
    ce: Tensor,
    ref_ce: Tensor,
    valid: Tensor,
    *,
    excess: str,
    temperature: float,
    min_ce_diff: float,
    transform: str,
    topk_percent: float,
    offsets: Sequence[int] | None = None,
) -> Tensor:
    """Raw Rho-1 weights Float[B,T,H] (detached, ≥ 0, exactly 0 where invalid), before the trainer's normalisation.

    ce: Float[B,T,H] per-(t,k) MTP CE (detached); ref_ce: Float[B,T] reference CE of token j given x_<j;
    valid: Bool[B,T,H] from `mtp_targets`. The options are defined in the module docstring.
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if min_ce_diff < 0:
        raise ValueError(f"min_ce_diff must be >= 0, got {min_ce_diff}")
    if not 0 < topk_percent <= 100:
        raise ValueError(f"topk_percent must be in (0, 100], got {topk_percent}")
    if valid.shape != ce.shape:
        raise ValueError(f"valid {tuple(valid.shape)} and ce {tuple(ce.shape)} must have one [B,T,H] shape")
    valid = valid.bool()
    x = excess_loss(ce, ref_ce, excess=excess, offsets=offsets)
    candidates = valid & (x.abs() >= min_ce_diff)  # NaN excess (a diverged step) is never a candidate
    if transform == "softmax_heads":
        w = softmax_heads(x, candidates, temperature=temperature)
    elif transform == "softmax_batch":
        w = _masked_softmax(x / temperature, candidates, dim=(0, 1, 2)) * valid.sum()
    else:
        count = round(topk_percent / 100 * int(valid.sum()))
        w = topk_mask(x, candidates, count).float()
    return torch.where(valid, w, 0.0).detach()


RefScorer = Callable[[Tensor, Tensor], Tensor]
"""(input_ids Long[B,T], attention_mask Bool[B,T]) → ref_ce Float[B,T]: a reference model scoring a batch."""


class Rho1Config(NoOptions):
    """Rho-1 excess-loss weighting (DESIGN §7; `wmtp.weighting.rho1`) and its reference model / CE cache."""

    reference: str | None = Field(
        None,
        description="Reference model: a wmtp run or model directory (its head 1 = next-token logits), or an HF "
        "causal LM (local path or hub name). Required when rho1 weights are used (also by its controls).",
    )
    reference_revision: str | None = Field(
        None, description="Hub revision of an HF reference given by name (part of the cache key); None = main."
    )
    excess: Literal["signed", "abs"] = Field(
        "abs",
        description="excess[t,k] = ce[t,k] − ref_ce[t+o_k] (signed, Rho-1's original) or its absolute value (abs).",
    )
    transform: Literal["softmax_heads", "softmax_batch", "topk"] = Field(
        "softmax_heads",
        description="softmax_heads: softmax of excess/T over the candidate heads at each t times their count "
        "(equal excess → weight 1 everywhere); softmax_batch: softmax over all valid entries of the batch, "
        "rescaled to mean 1; topk: 1 for the top topk_percent, else 0.",
    )
    temperature: float = Field(1.0, gt=0, description="Softmax temperature T (softmax transforms only).")
    min_ce_diff: float = Field(
        0.0, ge=0, description="Entries with |excess| < min_ce_diff get weight exactly 0 (0 disables)."
    )
    topk_percent: float = Field(
        60.0, gt=0, le=100, description="topk: percent of the batch's valid entries kept (Rho-1 used 60–70)."
    )
    ref_on_the_fly: bool = Field(
        False,
        description="Compute ref_ce with the reference model during training instead of reading the cache "
        "written by `wmtp score-ref`.",
    )
    cache_dir: str | None = Field(
        None, description="Root of reference-CE caches (one subdirectory per key); None = <data.cache_dir>/ref."
    )
    shard_records: int = Field(256, ge=1, description="Records per cache shard (the unit of resumption).")
    score_batch_size: int = Field(16, ge=1, description="Records per reference forward when scoring.")


@register_weighting("rho1")
class Rho1Weight(WeightFn):
    """WeightFn: Rho-1 weights from the batch's `ref_ce` (from the score-ref cache) or, when the batch has none
    and a `scorer` is given (`weighting.rho1.ref_on_the_fly`), from the reference model on the fly.

    `stats()` gives, since the last `begin_step`, the mean excess over valid entries per head
    (`excess_h{k}`, signed or abs as configured) and the fraction of valid entries below min_ce_diff.
    """

    Config = Rho1Config
    needs_ce = True
    uses_reference = True
    report_ignores = ("cache_dir",)

    def __init__(self, cfg: Rho1Config | None = None, *, seed: int = 0, scorer: RefScorer | None = None):
        super().__init__(cfg, seed=seed)
        self.scorer = scorer
        self.offsets: tuple[int, ...] | None = None  # the model's head_offsets (attach); None: 1..H
        self.begin_step(0)

    def attach(self, model: MTPModel) -> None:
        self.offsets = model.head_offsets

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        super().check_config(cfg)
        if cfg.data.pack and cfg.weighting.section(cls.name).ref_on_the_fly:
            raise ConfigError("data.pack=true needs the cached reference CE (wmtp score-ref): the on-the-fly "
                              "reference would attend across packed records; set weighting.rho1.ref_on_the_fly=false")

    def prepare(self, run: RunContext) -> None:
        """Attach every record's reference CE from the score-ref cache, or load the on-the-fly scorer."""
        run.train, run.valid, self.scorer, run.meta["reference"] = with_reference(run.cfg, run.data, run.train,
                                                                                 run.valid, run.device)

    def begin_step(self, step: int) -> None:
        self._excess_sum: Tensor | None = None
        self._count: Tensor | None = None
        self._n_below = 0

    def reference_ce(self, batch: dict[str, Any]) -> Tensor:
        if "ref_ce" in batch:
            return batch["ref_ce"]
        if self.scorer is None:
            raise RuntimeError(
                "the batch has no ref_ce: rho1 needs the reference cache (`wmtp score-ref`) or "
                "weighting.rho1.ref_on_the_fly=true"
            )
        return self.scorer(batch["input_ids"], batch["attention_mask"])

    def weights(
        self, batch: dict[str, Any], valid: Tensor, ce: Tensor | None, outputs: dict[str, Tensor]
    ) -> Tensor:
        """Raw weights Float[B,T,H] (`rho1_weights`); the step's excess statistics are recorded for `stats`."""
        ce, ref_ce = self._ce_pair(batch, ce)
        self._record(excess_loss(ce, ref_ce, excess=self.cfg.excess, offsets=self.offsets), valid.bool())
        return self._weights(ce, ref_ce, valid)

    def has_local_weights(self) -> bool:
        """softmax_heads is local to a position (any excess, any min_ce_diff), and softmax_batch is local up to its
        normaliser (log-weights: `local_weights_are_logs`): the step's one pass; topk needs every weight of the batch
        first (two passes)."""
        return self.cfg.transform in ("softmax_heads", "softmax_batch")

    def local_weights_are_logs(self) -> bool:
        """softmax_batch: log-weights excess/T on candidates (−inf elsewhere); the normaliser n_valid/Z is the step's."""
        return self.cfg.transform == "softmax_batch"

    def local_extras(self, batch: dict[str, Any], valid: Tensor) -> dict[str, Tensor]:
        """{"ref_ce": Float[B,T,H]}: the reference CE of each entry's target token, ref_ce[b,t+o_k]."""
        ref_ce = self.reference_ce(batch).to(valid.device).detach().float()
        return {"ref_ce": ref_ce_at_targets(ref_ce, valid.shape[-1], self.offsets)}

    def local_weights(
        self, ce: Tensor, valid: Tensor, extras: dict[str, Tensor], outputs: dict[str, Tensor]
    ) -> Tensor:
        """Float[n,H] of n positions, statistics recorded: softmax_heads weights (equal to `weights` there), or for
        softmax_batch the log-weights excess/T of the candidates (−inf elsewhere; `weights` = their softmax over the
        batch × n_valid)."""
        x = _excess(ce.detach().float() - extras["ref_ce"], self.cfg.excess)
        valid = valid.bool()
        self._record(x, valid)
        candidates = valid & (x.abs() >= self.cfg.min_ce_diff)
        if self.cfg.transform == "softmax_batch":
            return torch.where(candidates, x / self.cfg.temperature, float("-inf"))
        return torch.where(valid, softmax_heads(x, candidates, temperature=self.cfg.temperature), 0.0)

    def validation_weights(
        self, batch: dict[str, Any], valid: Tensor, ce: Tensor | None, outputs: dict[str, Tensor]
    ) -> Tensor:
        """The raw weights without recording statistics."""
        return self._weights(*self._ce_pair(batch, ce), valid)

    def _ce_pair(self, batch: dict[str, Any], ce: Tensor | None) -> tuple[Tensor, Tensor]:
        """(ce Float[B,T,H], ref_ce Float[B,T]) of the batch."""
        if ce is None:
            raise ValueError("Rho1Weight needs the per-(t,k) CE (needs_ce=True)")
        return ce, self.reference_ce(batch).to(ce.device)

    def _weights(self, ce: Tensor, ref_ce: Tensor, valid: Tensor) -> Tensor:
        c = self.cfg
        return rho1_weights(
            ce, ref_ce, valid, excess=c.excess, temperature=c.temperature, min_ce_diff=c.min_ce_diff,
            transform=c.transform, topk_percent=c.topk_percent, offsets=self.offsets,
        )  # fmt: skip

    def _record(self, x: Tensor, valid: Tensor) -> None:
        """Add excess x and valid ([..., H], any leading shape) to the step's sums, on the device (no host sync)."""
        H = x.shape[-1]
        x, valid = x.reshape(-1, H), valid.reshape(-1, H)
        sums = torch.where(valid, x, 0.0).sum(dim=0).double()
        counts = valid.sum(dim=0).double()
        below = (valid & (x.abs() < self.cfg.min_ce_diff)).sum()
        self._excess_sum = sums if self._excess_sum is None else self._excess_sum + sums
        self._count = counts if self._count is None else self._count + counts
        self._n_below = self._n_below + below

    def stats(self) -> dict[str, float]:
        if self._count is None or self._count.sum() == 0:
            return {}
        mean = (self._excess_sum / self._count.clamp(min=1)).tolist()
        stats = {f"excess_h{k + 1}": m for k, m in enumerate(mean)}
        stats["excess_frac_below_min"] = float(self._n_below) / self._count.sum().item()
        return stats
