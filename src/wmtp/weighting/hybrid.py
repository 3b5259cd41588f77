"""Hybrid weighting (DESIGN §7): two registered weightings combined, each normalised first.

With a, b the raw weights of the components `weighting.hybrid.of` (default critic and rho1) and â, b̂ each
normalised to mean 1 over the micro-batch's valid entries (`normalize_weights(mode="mean")`, as the trainer does):

    mode=product   w = â · b̂            (an entry weighs much only where both components agree)
    mode=mean      w = (â + b̂) / 2

So a hybrid with `uniform` gives the other component's normalised weights (product) or (1 + b̂)/2 (mean). The
trainer then normalises w as it does any raw weights.

Each component is built from its own section (`weighting.critic.*`, `weighting.rho1.*`) and runs every hook as it
would alone: extra modules, optimizer groups, preparation (references, caches), pre-training stages (one after
the other), forward outputs (merged; a key both give is refused), auxiliary losses (summed, metrics merged),
statistics, validation metrics, and checkpoint state (nested under each component's name). Its declarations
follow the components': needs_* and uses_reference when any component's is set, train_on the one they declare,
packing when both support it, pre_train_kinds their union. `HybridWeight.components(wcfg)` names them for the
code that reads declarations from the classes (wmtp.registry.method_classes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import Field, field_validator
from torch import Tensor

from wmtp.config import ConfigError, RunConfig, WeightingConfig
from wmtp.model.mtp import MTPModel, TrunkContext
from wmtp.registry import declared_train_on, register_weighting, weighting_class, weightings
from wmtp.weighting.base import NoOptions, RunContext, WeightFn, normalize_weights

DECLARED_FLAGS = ("needs_ce", "needs_values", "needs_grad_norm", "uses_reference")  # any component's


def merged(parts: Sequence[dict[str, Any]], what: str) -> dict[str, Any]:
    """The union of the components' dicts; a key two of them give is refused (ValueError naming it)."""
    out: dict[str, Any] = {}
    for part in parts:
        clash = sorted(set(out) & set(part))
        if clash:
            raise ValueError(f"the hybrid's components both give the {what} {clash}")
        out.update(part)
    return out


def combine(a: Tensor, b: Tensor, valid: Tensor, *, mode: str) -> Tensor:
    """Float[B,T,H]: the raw weights a and b, each normalised to mean 1 over `valid`, multiplied (product) or
    averaged (mean); 0 where invalid."""
    if mode not in ("product", "mean"):
        raise ValueError(f"hybrid mode must be product or mean, got {mode!r}")
    a_hat, b_hat = (normalize_weights(w, valid, mode="mean") for w in (a, b))
    return a_hat * b_hat if mode == "product" else (a_hat + b_hat) / 2


class HybridConfig(NoOptions):
    """Two registered weightings combined (`wmtp.weighting.hybrid`); each reads its own section."""

    of: list[str] = Field(
        ["critic", "rho1"],
        description="The two weightings combined: registered, neither a control nor hybrid, not the same twice.",
    )
    mode: Literal["product", "mean"] = Field(
        "product", description="product: w = â·b̂; mean: w = (â + b̂)/2 (â, b̂: each normalised to mean 1 first)."
    )

    @field_validator("of")
    @classmethod
    def _components(cls, value: list[str]) -> list[str]:
        classes = weightings()
        where = f"weighting.hybrid.of={value}"
        if len(value) != 2 or value[0] == value[1]:
            raise ValueError(f"{where}: give two different weightings (e.g. [critic, rho1])")
        for name in value:
            if name not in classes:
                raise ValueError(f"{where}: {name!r} is not a registered weighting; registered: {', '.join(classes)}")
            if classes[name].is_control or getattr(classes[name], "components", None) is not None:
                raise ValueError(f"{where}: {name!r} cannot be a component: a hybrid combines weightings, not "
                                 "controls or hybrids (`shuffled:hybrid` is the hybrid's control)")
        return value


@register_weighting("hybrid")
class HybridWeight(WeightFn):
    """WeightFn: `combine` of the raw weights of two component WeightFns; every other hook reaches both."""

    Config = HybridConfig

    def __init__(self, components: Sequence[WeightFn], cfg: HybridConfig | None = None, *, seed: int = 0):
        super().__init__(cfg, seed=seed)
        if len(components) != 2 or components[0].name == components[1].name:
            raise ValueError(f"a hybrid combines two different weightings, got {[c.name for c in components]}")
        self.parts = list(components)
        for flag in DECLARED_FLAGS:
            setattr(self, flag, any(getattr(c, flag, False) for c in self.parts))
        declared = {c.train_on for c in self.parts} - {None}  # check_config refuses two different ones
        self.train_on = declared.pop() if len(declared) == 1 else None
        self.supports_packing = all(c.supports_packing for c in self.parts)
        self.pre_train_kinds = tuple(dict.fromkeys(k for c in self.parts for k in c.pre_train_kinds))

    # ---- construction and checks --------------------------------------------------------------------------

    @classmethod
    def components(cls, wcfg: WeightingConfig) -> tuple[str, ...]:
        """The names of the weightings a hybrid run with `wcfg` combines (its section's `of`)."""
        return tuple(wcfg.section(cls.name).of)

    @classmethod
    def from_config(cls, wcfg: WeightingConfig, *, seed: int) -> WeightFn:
        parts = [weighting_class(name).from_config(wcfg, seed=seed) for name in cls.components(wcfg)]
        return cls(parts, wcfg.section(cls.name), seed=seed)

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Each component's own checks (train_on, packing, its settings) on the run's config; components that
        declare different data.train_on are refused."""
        try:
            declared_train_on(cfg.weighting)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        for name in cls.components(cfg.weighting):
            weighting_class(name).check_config(cfg)

    # ---- weights ------------------------------------------------------------------------------------------

    def weights(
        self, batch: dict[str, Any], valid: Tensor, ce: Tensor | None, outputs: dict[str, Tensor]
    ) -> Tensor:
        a, b = (c.weights(batch, valid, ce, outputs) for c in self.parts)
        return combine(a, b, valid.bool(), mode=self.cfg.mode)

    def validation_weights(
        self, batch: dict[str, Any], valid: Tensor, ce: Tensor | None, outputs: dict[str, Tensor]
    ) -> Tensor:
        a, b = (c.validation_weights(batch, valid, ce, outputs) for c in self.parts)
        return combine(a, b, valid.bool(), mode=self.cfg.mode)

    # ---- the components' hooks ----------------------------------------------------------------------------

    def attach(self, model: MTPModel) -> None:
        for c in self.parts:
            c.attach(model)

    def param_groups(self, model: MTPModel) -> list[dict[str, Any]]:
        return [group for c in self.parts for group in c.param_groups(model)]

    def prepare(self, run: RunContext) -> None:
        for c in self.parts:
            c.prepare(run)

    def bind(self, trainer: Any) -> None:
        for c in self.parts:
            c.bind(trainer)

    def pre_train_steps(self) -> tuple[int, int]:
        """(done, total) summed over the components' stages (they run one after the other)."""
        steps = [c.pre_train_steps() for c in self.parts]
        return sum(done for done, _ in steps), sum(total for _, total in steps)

    def pre_train(self, report: Callable[[str], None]) -> None:
        for c in self.parts:
            c.pre_train(report)

    def begin_step(self, step: int) -> None:
        for c in self.parts:
            c.begin_step(step)

    def forward(self, model: MTPModel, z: Tensor, ctx: TrunkContext) -> dict[str, Tensor]:
        return merged([c.forward(model, z, ctx) for c in self.parts], "outputs")

    def aux_loss(
        self, batch: dict[str, Any], outputs: dict[str, Tensor], *, n_tokens: int
    ) -> tuple[Tensor, dict[str, float]] | None:
        """The components' auxiliary losses summed, their metrics merged (None when neither has one)."""
        found = [aux for c in self.parts if (aux := c.aux_loss(batch, outputs, n_tokens=n_tokens)) is not None]
        if not found:
            return None
        loss = sum((part for part, _ in found[1:]), found[0][0])
        return loss, merged([metrics for _, metrics in found], "aux_loss metrics")

    def stats(self) -> dict[str, float]:
        return merged([c.stats() for c in self.parts], "stats")

    def eval_start(self) -> dict[str, Any] | None:
        """{component name: its accumulator} for the components with validation metrics (None: neither has)."""
        accs = {c.name: acc for c in self.parts if (acc := c.eval_start()) is not None}
        return accs or None

    def eval_batch(self, acc: dict[str, Any], batch: dict[str, Any], outputs: dict[str, Tensor]) -> None:
        for c in self.parts:
            if c.name in acc:
                c.eval_batch(acc[c.name], batch, outputs)

    def eval_result(self, acc: dict[str, Any]) -> dict[str, float]:
        return merged([c.eval_result(acc[c.name]) for c in self.parts if c.name in acc], "validation metrics")

    def state_dict(self) -> dict[str, Any]:
        return {c.name: c.state_dict() for c in self.parts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = [c.name for c in self.parts if c.name not in state]
        if missing:
            raise KeyError(f"the hybrid's checkpoint state has no entry for {missing} (it holds {sorted(state)})")
        for c in self.parts:
            c.load_state_dict(state[c.name])
