"""Weighting name → WeightFn (explicit table; no import-time registration)."""

from __future__ import annotations

from wmtp.config import WeightingConfig
from wmtp.weighting.base import WeightFn
from wmtp.weighting.uniform import UniformWeight


def build_weight_fn(cfg: WeightingConfig) -> WeightFn:
    """The WeightFn selected by `weighting.name`."""
    builders = {"uniform": UniformWeight}
    return builders[cfg.name]()
