"""The WeightFn interface, weight normalisation and weight statistics (DESIGN §6–§7).

A WeightFn maps a batch (and, if it asks for them, the detached per-(t,k) CEs) to raw weights
w: Float[B,T,H] ≥ 0. The trainer then normalises, clips and detaches them; invalid entries are 0.
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
) -> Tensor:
    """Normalise raw weights over the valid entries, then clip; returns detached Float[B,T,H], 0 where invalid.

    mode "mean": w ← w · n_valid / Σ_valid w (mean over valid entries is 1; uniform ⇒ 1).
    mode "per_position": w[t,k] ← w[t,k] · n_valid(t) / Σ_k w[t,k] (Σ_k w = number of valid heads at t).
    An all-zero group (nothing to normalise) stays zero.
    """
    w = torch.where(valid, weights.detach().float(), 0.0)
    if torch.any(w < 0):
        raise ValueError(f"weights must be >= 0, got min {w.min().item():.4g}")
    if mode == "mean":
        total = w.sum()
        w = w * (valid.sum() / total) if total > 0 else w
    elif mode == "per_position":
        total = w.sum(dim=-1, keepdim=True)  # [B,T,1]
        count = valid.sum(dim=-1, keepdim=True)
        w = torch.where(total > 0, w * count / total.clamp(min=torch.finfo(w.dtype).tiny), 0.0)
    else:
        raise ValueError(f"unknown normalisation {mode!r}; allowed: mean, per_position")
    if clip_min is not None or clip_max is not None:
        w = torch.where(valid, w.clamp(min=clip_min, max=clip_max), 0.0)
    return w


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
