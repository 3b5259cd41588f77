"""hybrid: two weightings combined after normalisation, every hook forwarded to both, declarations derived, config
errors, its control, and the sweep's plan (train_on, reference, grid keys of its components)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wmtp.config import ConfigError, load_config
from wmtp.registry import build_weight_fn, register_weighting, weighting_class
from wmtp.sweep import parse_method, plan_sweep
from wmtp.weighting.base import NoOptions, WeightFn, normalize_weights
from wmtp.weighting.controls import ControlWeight
from wmtp.weighting.hybrid import HybridConfig, HybridWeight, combine
from wmtp.weighting.rho1 import Rho1Config, Rho1Weight
from wmtp.weighting.uniform import UniformWeight


@register_weighting("hyb_position")
class PositionWeight(WeightFn):
    """w[t,k] = 1 + t + k (depends on the entry, so a wrong combination shows)."""

    def weights(self, batch, valid, ce, outputs):
        B, T, H = valid.shape
        t = torch.arange(T, dtype=torch.float32)[None, :, None]
        k = torch.arange(H, dtype=torch.float32)[None, None, :]
        return torch.where(valid, 1 + t + k, 0.0).expand(B, T, H)


class ProbeConfig(NoOptions):
    scale: float = 1.0


@register_weighting("hyb_probe")
class ProbeWeight(WeightFn):
    """Records every hook it sees; has a module, an optimizer group, an aux loss, stats, eval metrics and state."""

    Config = ProbeConfig
    needs_values = True
    supports_packing = False
    pre_train_kinds = ("probe_train",)

    def __init__(self, cfg=None, *, seed=0, key="probe"):
        super().__init__(cfg, seed=seed)
        self.key, self.calls, self.state = key, [], {"count": 0}
        self.param = torch.nn.Parameter(torch.tensor(2.0))

    def attach(self, model):
        self.calls.append("attach")

    def param_groups(self, model):
        return [{"params": [self.param], "name": self.key}]

    def prepare(self, run):
        self.calls.append("prepare")

    def bind(self, trainer):
        self.calls.append("bind")

    def pre_train_steps(self):
        return 1, 3

    def pre_train(self, report):
        self.calls.append("pre_train")

    def begin_step(self, step):
        self.calls.append(f"begin_step {step}")

    def forward(self, model, z, ctx):
        return {f"{self.key}_out": z * self.param}

    def weights(self, batch, valid, ce, outputs):
        self.state["count"] += 1
        return torch.where(valid, outputs[f"{self.key}_out"].detach().mean(-1, keepdim=True).abs() + 1, 0.0)

    def validation_weights(self, batch, valid, ce, outputs):
        return torch.where(valid, outputs[f"{self.key}_out"].detach().mean(-1, keepdim=True).abs() + 1, 0.0)

    def aux_loss(self, batch, outputs, *, n_tokens):
        return self.cfg.scale * outputs[f"{self.key}_out"].sum(), {f"{self.key}_aux": 1.0}

    def stats(self):
        return {f"{self.key}_stat": float(self.state["count"])}

    def eval_start(self):
        return []

    def eval_batch(self, acc, batch, outputs):
        acc.append(len(batch["ids"]))

    def eval_result(self, acc):
        return {f"{self.key}_eval": float(sum(acc))}

    def state_dict(self):
        return dict(self.state)

    def load_state_dict(self, state):
        self.state = dict(state)


@register_weighting("hyb_probe2")
class OtherProbe(ProbeWeight):
    def __init__(self, cfg=None, *, seed=0, key="other"):
        super().__init__(cfg, seed=seed, key=key)


def make_valid(seed: int, shape=(3, 7, 3)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    valid = torch.rand(shape, generator=g) < 0.7
    valid[0, 0] = False
    return valid


def rho1_inputs(seed: int, shape=(3, 7, 3)):
    g = torch.Generator().manual_seed(seed)
    ce = torch.rand(shape, generator=g) * 4
    return {"ref_ce": torch.rand(shape[:2], generator=g) * 4}, ce


@pytest.mark.parametrize("other", ["rho1", "hyb_position"])
def test_uniform_with_x_is_x_after_normalisation(other):
    valid = make_valid(0)
    batch, ce = rho1_inputs(1)
    x = weighting_class(other)()
    raw_x = x.weights(batch, valid, ce, {})
    x_hat = normalize_weights(raw_x, valid, mode="mean")
    for order in ((UniformWeight(), x), (x, UniformWeight())):
        product = HybridWeight(order, HybridConfig(mode="product"))
        w = product.weights(batch, valid, ce, {})
        torch.testing.assert_close(normalize_weights(w, valid, mode="mean"), x_hat)
        mean = HybridWeight(order, HybridConfig(mode="mean"))
        torch.testing.assert_close(mean.weights(batch, valid, ce, {}), torch.where(valid, (1 + x_hat) / 2, 0.0))
    assert not torch.allclose(x_hat[valid], torch.ones(int(valid.sum())))  # x is not uniform: the test can fail


def test_combine_against_a_naive_loop():
    valid = make_valid(2)
    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(valid.shape, generator=g) * 3, torch.rand(valid.shape, generator=g)
    entries = valid.nonzero().tolist()
    mean_a = sum(a[tuple(e)].item() for e in entries) / len(entries)
    mean_b = sum(b[tuple(e)].item() for e in entries) / len(entries)
    for mode in ("product", "mean"):
        out = combine(a, b, valid, mode=mode)
        for idx in map(tuple, entries):
            ah, bh = a[idx].item() / mean_a, b[idx].item() / mean_b
            want = ah * bh if mode == "product" else (ah + bh) / 2
            assert out[idx].item() == pytest.approx(want, rel=1e-5)
        assert torch.all(out[~valid] == 0)
    with pytest.raises(ValueError, match="product or mean"):
        combine(a, b, valid, mode="max")


def test_every_hook_reaches_both_components():
    a, b = ProbeWeight(), OtherProbe(ProbeConfig(scale=3.0))
    h = HybridWeight([a, b])
    model, report = object(), (lambda text: None)
    h.attach(model)
    h.prepare(None)
    h.bind(None)
    h.pre_train(report)
    h.begin_step(4)
    assert a.calls == b.calls == ["attach", "prepare", "bind", "pre_train", "begin_step 4"]
    assert [g["name"] for g in h.param_groups(model)] == ["probe", "other"]
    assert h.pre_train_steps() == (2, 6)
    z = torch.ones(2, 5, 4)
    outputs = h.forward(model, z, None)
    assert set(outputs) == {"probe_out", "other_out"}
    loss, metrics = h.aux_loss({}, outputs, n_tokens=10)
    assert metrics == {"probe_aux": 1.0, "other_aux": 1.0}
    loss.backward()
    assert a.param.grad.item() == pytest.approx(40.0) and b.param.grad.item() == pytest.approx(120.0)  # 1× and 3×
    valid = torch.ones(2, 5, 2, dtype=torch.bool)
    h.weights({}, valid, None, {k: v.detach() for k, v in outputs.items()})
    assert h.stats() == {"probe_stat": 1.0, "other_stat": 1.0}
    acc = h.eval_start()
    h.eval_batch(acc, {"ids": ["x", "y"]}, outputs)
    assert h.eval_result(acc) == {"probe_eval": 2.0, "other_eval": 2.0}
    state = h.state_dict()
    assert state == {"hyb_probe": {"count": 1}, "hyb_probe2": {"count": 1}}
    fresh = HybridWeight([ProbeWeight(), OtherProbe()])
    fresh.load_state_dict({"hyb_probe": {"count": 5}, "hyb_probe2": {"count": 7}})
    assert fresh.parts[0].state == {"count": 5} and fresh.parts[1].state == {"count": 7}
    with pytest.raises(KeyError, match="hyb_probe2"):
        fresh.load_state_dict({"hyb_probe": {"count": 5}})


def test_validation_weights_use_the_components_validation_weights():
    a, b = ProbeWeight(), OtherProbe()
    h = HybridWeight([a, b])
    outputs = {k: v.detach() for k, v in h.forward(None, torch.ones(2, 5, 4), None).items()}
    valid = torch.ones(2, 5, 2, dtype=torch.bool)
    h.validation_weights({}, valid, None, outputs)
    assert a.state == b.state == {"count": 0}  # the training weights' state is untouched


def test_colliding_outputs_and_metrics_are_refused():
    h = HybridWeight([ProbeWeight(key="same"), OtherProbe(key="same")])
    with pytest.raises(ValueError, match="outputs \\['same_out'\\]"):
        h.forward(None, torch.ones(1, 2, 3), None)
    with pytest.raises(ValueError, match="stats"):
        h.stats()


def test_components_without_hooks_give_none():
    h = HybridWeight([UniformWeight(), weighting_class("hyb_position")()])
    assert h.eval_start() is None and h.aux_loss({}, {}, n_tokens=1) is None and h.forward(None, None, None) == {}
    assert h.pre_train_steps() == (0, 0) and h.state_dict() == {"uniform": {}, "hyb_position": {}}


def test_declarations_follow_the_components():
    cfg = load_config(None, ["weighting.name=hybrid", "data.train_on=all"])
    h = build_weight_fn(cfg.weighting)
    assert [c.name for c in h.parts] == ["critic", "rho1"]
    assert h.needs_ce and h.needs_values and h.uses_reference and h.train_on == "all"
    assert not h.supports_packing and h.pre_train_kinds == ("critic_train", "critic_eval")
    h = HybridWeight([UniformWeight(), ProbeWeight()])
    assert not h.needs_ce and h.needs_values and not h.uses_reference and h.train_on is None
    assert not h.supports_packing and h.pre_train_kinds == ("probe_train",)
    h = HybridWeight([UniformWeight(), Rho1Weight(Rho1Config(temperature=2.0))])
    assert h.needs_ce and not h.needs_values and h.supports_packing and h.pre_train_kinds == ()


def test_components_read_their_own_sections_and_those_sections_stay_in_the_config():
    cfg = load_config(None, ["weighting.name=hybrid", "weighting.hybrid.of=[uniform,rho1]",
                             "weighting.rho1.temperature=3", "weighting.hybrid.mode=mean"])
    h = build_weight_fn(cfg.weighting)
    assert isinstance(h.parts[1], Rho1Weight) and h.parts[1].cfg.temperature == 3.0 and h.cfg.mode == "mean"
    sections = {k for k, v in cfg.model_dump()["weighting"].items() if isinstance(v, dict)}
    assert sections == {"hybrid", "uniform", "rho1"}
    control = load_config(None, ["weighting.name=shuffled", "weighting.control_of=hybrid", "data.train_on=all"])
    sections = {k for k, v in control.model_dump()["weighting"].items() if isinstance(v, dict)}
    assert sections == {"shuffled", "hybrid", "critic", "rho1"}


@pytest.mark.parametrize("override, message", [
    ("weighting.hybrid.of=[rho1]", "two different weightings"),
    ("weighting.hybrid.of=[rho1,rho1]", "two different weightings"),
    ("weighting.hybrid.of=[rho1,nope]", "'nope' is not a registered weighting"),
    ("weighting.hybrid.of=[shuffled,rho1]", "'shuffled' cannot be a component"),
    ("weighting.hybrid.of=[hybrid,rho1]", "'hybrid' cannot be a component"),
    ("weighting.hybrid.mode=max", "weighting.hybrid.mode"),
    ("weighting.hybrid.bogus=1", "allowed keys are mode, of"),
    ("data.train_on=correct", "set data.train_on=all"),  # the critic component's check
])
def test_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["weighting.name=hybrid", "data.train_on=all", override])


def test_packing_is_refused_when_a_component_needs_one_record_per_row():
    with pytest.raises(ConfigError, match="data.pack=true"):
        load_config(None, ["weighting.name=hybrid", "data.train_on=all", "data.pack=true"])
    load_config(None, ["weighting.name=hybrid", "weighting.hybrid.of=[uniform,rho1]", "data.pack=true"])


def test_shuffled_hybrid_permutes_the_hybrid_weights():
    cfg = load_config(None, ["weighting.name=shuffled", "weighting.control_of=hybrid",
                             "weighting.hybrid.of=[hyb_position,rho1]"])
    control = build_weight_fn(cfg.weighting, seed=3)
    assert isinstance(control, ControlWeight) and isinstance(control.base, HybridWeight)
    assert control.needs_ce and control.uses_reference
    valid = make_valid(4)
    batch, ce = rho1_inputs(5)
    hybrid = control.base.weights(batch, valid, ce, {})
    shuffled = control.weights(batch, valid, ce, {})
    assert torch.equal(shuffled[valid].sort().values, hybrid[valid].sort().values)
    assert not torch.equal(shuffled, hybrid) and torch.all(shuffled[~valid] == 0)


def test_sweep_plans_the_components_data_reference_and_grid(tmp_path: Path):
    plan = plan_sweep(None, ["train.max_steps=3"], out_dir=tmp_path, methods=["uniform", "hybrid", "shuffled:hybrid"],
                      seeds=[0], grid={"weighting.rho1.temperature": ["2.0"]})
    by_name = {r.name: r.cfg for r in plan.runs}
    assert set(by_name) == {"uniform/seed0", "hybrid-temperature=2.0/seed0",
                            "shuffled-of-hybrid-temperature=2.0/seed0"}
    for name in ("hybrid-temperature=2.0/seed0", "shuffled-of-hybrid-temperature=2.0/seed0"):
        cfg = by_name[name]
        assert cfg.data.train_on == "all" and cfg.weighting.rho1.temperature == 2.0
        assert Path(cfg.weighting.rho1.reference) == tmp_path / "reference"
    assert plan.reference is not None
    plan = plan_sweep(None, ["weighting.hybrid.of=[uniform,gradnorm]"], out_dir=tmp_path, methods=["hybrid"], seeds=[0])
    assert plan.reference is None and plan.runs[0].cfg.data.train_on == "correct"


def test_methods_name_the_hybrid_by_its_components_data():
    assert parse_method("hybrid@all", default_control_of="rho1").text == "hybrid"  # the critic's data: implied
    assert parse_method("shuffled:hybrid@all", default_control_of="rho1").text == "shuffled:hybrid"
    with pytest.raises(ConfigError, match="hybrid learns from data.train_on=all records; drop @correct"):
        parse_method("hybrid@correct", default_control_of="rho1")
    spread = load_config(None, ["weighting.hybrid.of=[uniform,rho1]"]).weighting
    assert parse_method("hybrid@all", default_control_of="rho1", weighting=spread).text == "hybrid@all"
