"""Goal-gradient importance weighting (after Zhuang et al. 2025) for multi-token prediction (DESIGN §7).

Legend: B batch, T sequence, H heads, V vocabulary. The CE of head k at t is ce = −log p_y with p = softmax(logits),
y its target; its gradient with respect to the logits is p − onehot(y), so

    g[t,k] = ‖softmax(logits_k(t)) − onehot(y)‖₂ = sqrt((1 − p_y)² + Σ_{j≠y} p_j²)  ∈ [0, √2]

(0: the head is certain and right; √2: certain and wrong). A token the model already predicts well gets a small
weight, one it gets wrong a large weight, measured where the loss acts (the logits) rather than by the loss value.
Weights, over the valid entries:

    temperature None   w[t,k] = g[t,k]^power                                          (power 0: uniform)
    temperature T      w[t,k] = n(t) · exp(g[t,k]^power / T) / Σ_{k' valid at t} exp(g[t,k']^power / T)
                       (a softmax over the valid heads at t, n(t) of them, so Σ_k w[t,k] = n(t): equal norms
                       give weight 1; small T concentrates a position's weight on its hardest head)

The training step computes g inside its chunked CE (outputs["logit_grad_norm"], the class declares
needs_grad_norm), in its one pass (the weights are local to a position); `logit_grad_norm` is the reference form on
materialised logits. The trainer then normalises.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from wmtp.registry import register_weighting
from wmtp.weighting.base import NoOptions, WeightFn
from wmtp.weighting.rho1 import softmax_heads

GRAD_NORM_KEY = "logit_grad_norm"


def logit_grad_norm(logits: Tensor, targets: Tensor) -> Tensor:
    """Float[N]: ‖softmax(logits[n]) − onehot(targets[n])‖₂ per row = ‖∂ CE(logits[n], targets[n]) / ∂ logits[n]‖₂.

    logits: Float[N,V]; targets: Long[N] in [0, V). Computed in float32 as sqrt((Σ_{j≠y} p_j)² + Σ_{j≠y} p_j²):
    1 − p_y is summed from the other probabilities, so a near-certain right prediction keeps its small value
    instead of cancelling to 0.
    """
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"logits must be [N,V] and targets [N], got {tuple(logits.shape)} and {tuple(targets.shape)}")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= logits.shape[1]):
        raise ValueError(f"targets must lie in [0, {logits.shape[1]}), got [{int(targets.min())}, {int(targets.max())}]")
    p = torch.softmax(logits.detach().float(), dim=-1)
    others = p.scatter(1, targets.long()[:, None], 0.0)  # p_j for j ≠ y, 0 at y
    return (others.sum(dim=-1).square() + others.square().sum(dim=-1)).sqrt()


def gradnorm_weights(norms: Tensor, valid: Tensor, *, power: float, temperature: float | None) -> Tensor:
    """Raw weights Float[B,T,H] (detached, ≥ 0, 0 where invalid) from the norms g: Float[B,T,H] (module docstring)."""
    if norms.shape != valid.shape:
        raise ValueError(f"{GRAD_NORM_KEY} {tuple(norms.shape)} and valid {tuple(valid.shape)} must have one [B,T,H] shape")
    if power < 0:
        raise ValueError(f"power must be >= 0, got {power}")
    if temperature is not None and temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    valid = valid.bool()
    x = torch.where(valid, norms.detach().float().clamp(min=0.0), 0.0).pow(power)
    if temperature is not None:  # rho1's softmax_heads over the valid heads
        x = softmax_heads(x, valid, temperature=temperature)
    return torch.where(valid, x, 0.0).detach()


class GradNormConfig(NoOptions):
    """Goal-gradient importance weighting (`wmtp.weighting.gradnorm`): w = g^power, optionally tempered."""

    power: float = Field(1.0, ge=0, description="Exponent of the logit-gradient norm g ∈ [0, √2] (0: uniform).")
    temperature: float | None = Field(
        None, gt=0, description="None: w = g^power. T: w = n(t) · softmax over the valid heads at t of g^power / T "
        "(Σ_k w[t,k] = n(t); small T puts a position's weight on its hardest head).",
    )


@register_weighting("gradnorm")
class GradNormWeight(WeightFn):
    """WeightFn: w[t,k] from g[t,k] = ‖softmax(logits_k(t)) − onehot(target)‖₂, read from
    outputs["logit_grad_norm"] (Float[B,T,H], detached, 0 where invalid), which the training step computes
    inside its chunked CE for a weighting that declares needs_grad_norm."""

    Config = GradNormConfig
    needs_grad_norm: ClassVar[bool] = True

    def weights(
        self, batch: dict[str, Any], valid: Tensor, ce: Tensor | None, outputs: dict[str, Tensor]
    ) -> Tensor:
        if GRAD_NORM_KEY not in outputs:
            raise ValueError(f"the gradnorm weighting needs outputs[{GRAD_NORM_KEY!r}] (Float[B,T,H]), which the "
                             "training step computes for a weighting that declares needs_grad_norm=True; "
                             f"got outputs {sorted(outputs)}")
        return gradnorm_weights(outputs[GRAD_NORM_KEY], valid, power=self.cfg.power, temperature=self.cfg.temperature)

    def has_local_weights(self) -> bool:
        """w[t,k] reads only the norms of position t's heads: the step's one pass computes them in its chunks."""
        return True

    def local_weights(
        self, ce: Tensor, valid: Tensor, extras: dict[str, Tensor], outputs: dict[str, Tensor]
    ) -> Tensor:
        """Float[n,H] for n positions from outputs["logit_grad_norm"]: Float[n,H] (equal to `weights` there)."""
        return self.weights({}, valid, ce, outputs)
