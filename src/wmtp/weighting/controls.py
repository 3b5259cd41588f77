"""Control weightings (DESIGN §7): another method's weights with the link to the tokens broken.

    shuffled  the method's weights permuted among the batch's valid entries (same multiset, same places
              that carry loss)
    random    each valid entry gets a value drawn i.i.d. (with replacement) from the method's weights on the
              batch's valid entries (same marginal in expectation)

Both keep exactly the valid set of the method and of uniform weighting: invalid entries are 0, and the loss
denominator (Σ_valid 1) is unchanged. They act on raw weights, before the trainer's normalisation; with
`normalize=mean` the normalised shuffled weights are then a permutation of the method's normalised weights.

Randomness comes from a torch.Generator seeded by (run seed, optimizer step, micro-batch index within the
step), so a resumed run draws exactly what the uninterrupted one did, and the global RNG is never touched.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor

from wmtp.weighting.base import WeightFn

CONTROL_MODES = ("shuffled", "random")


def control_generator(seed: int, step: int, micro: int) -> torch.Generator:
    """A CPU generator that is a pure function of (seed, step, micro)."""
    digest = hashlib.sha256(f"wmtp-control:{seed}:{step}:{micro}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def shuffled_weights(weights: Tensor, valid: Tensor, generator: torch.Generator) -> Tensor:
    """weights Float[B,T,H] permuted among the valid entries (uniform random permutation); 0 where invalid."""
    valid = valid.bool()
    values = weights.detach()[valid]  # [N] in flat (b,t,k) order
    perm = torch.randperm(values.numel(), generator=generator).to(values.device)
    out = torch.zeros_like(weights, dtype=values.dtype)
    out[valid] = values[perm]
    return out


def random_weights(weights: Tensor, valid: Tensor, generator: torch.Generator) -> Tensor:
    """Each valid entry drawn i.i.d. from the empirical distribution of `weights` on the valid entries."""
    valid = valid.bool()
    values = weights.detach()[valid]
    out = torch.zeros_like(weights, dtype=values.dtype)
    if values.numel():
        idx = torch.randint(values.numel(), (values.numel(),), generator=generator).to(values.device)
        out[valid] = values[idx]
    return out


class ControlWeight:
    """WeightFn: `mode` ∈ {shuffled, random} applied to the raw weights of `base` (e.g. a Rho1Weight)."""

    def __init__(self, base: WeightFn, *, mode: str, seed: int):
        if mode not in CONTROL_MODES:
            raise ValueError(f"control mode must be one of {CONTROL_MODES}, got {mode!r}")
        self.base, self.mode, self.seed = base, mode, seed
        self.needs_ce = base.needs_ce
        self.needs_values = getattr(base, "needs_values", False)
        self.begin_step(0)

    def begin_step(self, step: int) -> None:
        """Called by the trainer before the micro-batches of optimizer step `step` (0-based)."""
        self._step, self._micro = step, 0
        begin = getattr(self.base, "begin_step", None)
        if begin is not None:
            begin(step)

    def __call__(self, batch: dict[str, Any], valid: Tensor, ce: Tensor | None) -> Tensor:
        w = self.base(batch, valid, ce)
        g = control_generator(self.seed, self._step, self._micro)
        self._micro += 1
        draw = shuffled_weights if self.mode == "shuffled" else random_weights
        return draw(w, valid, g)

    def last_stats(self) -> dict[str, float]:
        stats = getattr(self.base, "last_stats", None)
        return stats() if stats is not None else {}
