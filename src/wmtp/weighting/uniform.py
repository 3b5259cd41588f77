"""Uniform weighting: w ≡ 1 on valid entries (baseline MTP)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from wmtp.registry import register_weighting
from wmtp.weighting.base import WeightFn


@register_weighting("uniform")
class UniformWeight(WeightFn):
    """w[b,t,k] = 1 wherever valid."""

    def weights(
        self, batch: dict[str, Any], valid: Tensor, ce: Tensor | None, outputs: dict[str, Tensor]
    ) -> Tensor:
        return valid.float()
