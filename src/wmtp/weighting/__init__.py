"""Weightings: the WeightFn plug-in interface (base.py) and the registry (registry.py).

    from wmtp.weighting import WeightFn, register_weighting

    @register_weighting("mine")
    class MyWeight(WeightFn):
        class Config(WeightFn.Config):
            power: float = 1.0
        needs_ce = True
        def weights(self, batch, valid, ce, outputs):
            return ce ** self.cfg.power

makes `weighting.name=mine weighting.mine.power=2` a valid run (docs/architecture.md).
"""

from wmtp.registry import build_weight_fn, register_weighting, weighting_class, weightings
from wmtp.weighting.base import NoOptions, RunContext, WeightFn

__all__ = ["NoOptions", "RunContext", "WeightFn", "build_weight_fn", "register_weighting", "weighting_class",
           "weightings"]
