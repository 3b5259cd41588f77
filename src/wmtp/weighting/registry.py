"""Weighting name → WeightFn (explicit table; no import-time registration)."""

from __future__ import annotations

from wmtp.config import WeightingConfig
from wmtp.weighting.base import WeightFn
from wmtp.weighting.controls import ControlWeight
from wmtp.weighting.critic import CriticWeight
from wmtp.weighting.rho1 import RefScorer, Rho1Weight
from wmtp.weighting.uniform import UniformWeight

CONTROLS = ("random", "shuffled")


def uses_reference(cfg: WeightingConfig) -> bool:
    """Whether the weighting reads reference CEs (rho1 itself, or a control of rho1)."""
    return cfg.name == "rho1" or (cfg.name in CONTROLS and cfg.control_of == "rho1")


def uses_critic(cfg: WeightingConfig) -> bool:
    """Whether the weighting needs a value head (the critic itself, or a control of it)."""
    return cfg.name == "critic" or (cfg.name in CONTROLS and cfg.control_of == "critic")


def build_weight_fn(
    cfg: WeightingConfig, *, seed: int = 0, scorer: RefScorer | None = None, reward_rate: float = 0.5
) -> WeightFn:
    """The WeightFn selected by `weighting.name`.

    seed: the run seed (controls draw from it); scorer: the reference model for rho1's on-the-fly ref_ce
    (None: batches must carry `ref_ce` from the score-ref cache); reward_rate: fraction of correct training
    records (the critic's z-scored rewards).
    """
    methods = {
        "uniform": lambda: UniformWeight(),
        "rho1": lambda: Rho1Weight(cfg.rho1, scorer=scorer),
        "critic": lambda: CriticWeight(cfg.critic, reward_rate=reward_rate),
    }
    if cfg.name in CONTROLS:
        return ControlWeight(methods[cfg.control_of](), mode=cfg.name, seed=seed)
    return methods[cfg.name]()
