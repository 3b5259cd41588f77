"""The WeightFn interface, weight normalisation and weight statistics (DESIGN §6–§7).

A WeightFn maps a batch (and, if it asks for them, the detached per-(t,k) CEs) to raw weights
w: Float[B,T,H] ≥ 0. The trainer then normalises, clips and detaches them; invalid entries are 0.

Two optional methods, called by the trainer when a WeightFn has them:
    begin_step(step)  before the micro-batches of optimizer step `step` (0-based; restored on resume), so
                      that seeded draws and per-step statistics follow the step, not the number of calls
    last_stats()      dict[str, float] merged into the step's metrics row (e.g. rho1's `excess_h{k}`)
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor


class WeightFn(Protocol):
    """Raw per-(t,k) weights. `needs_ce`: whether `__call__` reads `ce` (then the trainer computes it first)."""

    needs_ce: bool

    def __call__(self, batch: dict[str, Any], valid: Tensor, ce: Tensor | None) -> Tensor:
        """batch: collated batch (DESIGN §3); valid: Bool[B,T,H]; ce: Float[B,T,H] detached or None.
        Returns raw weights Float[B,T,H] (≥ 0; values at invalid entries are ignored)."""
        ...


def normalize_weights(
    weights: Tensor,
    valid: Tensor,
    *,
    mode: str,
    clip_min: float | None = None,
    clip_max: float | None = None,
    totals: tuple[float, int] | None = None,
) -> Tensor:
    """Normalise raw weights over the valid entries, then clip; returns detached Float[B,T,H], 0 where invalid.

    mode "mean": w ← w · n_valid / Σ_valid w (mean over valid entries is 1; uniform ⇒ 1). `totals` =
    (Σ_valid w, n_valid) of the whole step when this tensor is one micro-batch of it (gradient accumulation).
    mode "per_position": w[t,k] ← w[t,k] · n_valid(t) / Σ_k w[t,k] (Σ_k w = number of valid heads at t).
    An all-zero group (nothing to normalise) stays zero.
    """
    w = torch.where(valid, weights.detach().float(), 0.0)
    if torch.any(w < 0):
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
