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
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from wmtp.config import WeightingConfig
from wmtp.model.mtp import MTPModel, TrunkContext
from wmtp.registry import register_weighting, weighting_class
from wmtp.weighting.base import RunContext, WeightFn

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


class ControlWeight(WeightFn):
    """WeightFn: `mode` ∈ {shuffled, random} applied to the raw weights of `base` (any weighting, e.g. a
    Rho1Weight); every other hook is the base's, so the base trains, pre-trains and validates as it would alone.
    Its weights are never local (has_local_weights: False): a permutation spans the batch, so it takes two passes."""

    is_control = True

    def __init__(self, base: WeightFn, *, mode: str, seed: int):
        if mode not in CONTROL_MODES:
            raise ValueError(f"control mode must be one of {CONTROL_MODES}, got {mode!r}")
        super().__init__(seed=seed)
        self.base, self.mode = base, mode
        for declared in ("needs_ce", "needs_values", "needs_grad_norm", "train_on", "supports_packing",
                         "uses_reference", "pre_train_kinds"):  # the method's declarations are the control's
            setattr(self, declared, getattr(base, declared))
        self.begin_step(0)

    @classmethod
    def from_config(cls, wcfg: WeightingConfig, *, seed: int) -> WeightFn:
        base = weighting_class(wcfg.control_of).from_config(wcfg, seed=seed)
        return cls(base, mode=cls.name, seed=seed)

    def begin_step(self, step: int) -> None:
        """Called by the trainer before the micro-batches of optimizer step `step` (0-based)."""
        self._step, self._micro = step, 0
        self.base.begin_step(step)

    def weights(
        self, batch: dict[str, Any], valid: Tensor, ce: Tensor | None, outputs: dict[str, Tensor]
    ) -> Tensor:
        w = self.base.weights(batch, valid, ce, outputs)
        g = control_generator(self.seed, self._step, self._micro)
        self._micro += 1
        draw = shuffled_weights if self.mode == "shuffled" else random_weights
        return draw(w, valid, g)

    def validation_weights(
        self, batch: dict[str, Any], valid: Tensor, ce: Tensor | None, outputs: dict[str, Tensor]
    ) -> Tensor:
        """The base's validation weights redrawn by a generator that is a function of the run seed and the batch's
        record ids alone (training draws and counters untouched)."""
        w = self.base.validation_weights(batch, valid, ce, outputs)
        digest = hashlib.sha256("\0".join(map(str, batch["ids"])).encode()).digest()
        g = control_generator(self.seed, -1, int.from_bytes(digest[:4], "little"))
        draw = shuffled_weights if self.mode == "shuffled" else random_weights
        return draw(w, valid, g)

    # ---- the base's hooks ---------------------------------------------------------------------------------

    def attach(self, model: MTPModel) -> None:
        self.base.attach(model)

    def param_groups(self, model: MTPModel) -> list[dict[str, Any]]:
        return self.base.param_groups(model)

    def prepare(self, run: RunContext) -> None:
        self.base.prepare(run)

    def bind(self, trainer: Any) -> None:
        self.base.bind(trainer)

    def pre_train_steps(self) -> tuple[int, int]:
        return self.base.pre_train_steps()

    def pre_train(self, report: Callable[[str], None]) -> None:
        self.base.pre_train(report)

    def forward(self, model: MTPModel, z: Tensor, ctx: TrunkContext) -> dict[str, Tensor]:
        return self.base.forward(model, z, ctx)

    def aux_loss(
        self, batch: dict[str, Any], outputs: dict[str, Tensor], *, n_tokens: int
    ) -> tuple[Tensor, dict[str, float]] | None:
        return self.base.aux_loss(batch, outputs, n_tokens=n_tokens)

    def stats(self) -> dict[str, float]:
        return self.base.stats()

    def eval_start(self) -> Any:
        return self.base.eval_start()

    def eval_batch(self, acc: Any, batch: dict[str, Any], outputs: dict[str, Tensor]) -> None:
        self.base.eval_batch(acc, batch, outputs)

    def eval_result(self, acc: Any) -> dict[str, float]:
        return self.base.eval_result(acc)

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base.load_state_dict(state)


@register_weighting("shuffled")
class ShuffledControl(ControlWeight):
    """The weights of `weighting.control_of` permuted among the batch's valid entries."""


@register_weighting("random")
class RandomControl(ControlWeight):
    """The weights of `weighting.control_of` drawn i.i.d. from their empirical distribution on the valid entries."""
