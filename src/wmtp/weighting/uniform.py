"""Uniform weighting: w ≡ 1 on valid entries (baseline MTP)."""

from __future__ import annotations

from typing import Any

from torch import Tensor


class UniformWeight:
    """w[b,t,k] = 1 wherever valid."""

    needs_ce = False

    def __call__(self, batch: dict[str, Any], valid: Tensor, ce: Tensor | None) -> Tensor:
        return valid.float()
