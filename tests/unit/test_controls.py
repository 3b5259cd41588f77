"""Control weightings: same valid set, same multiset (shuffled) / support (random), seeded by (seed, step)."""

from __future__ import annotations


import pytest
import torch
from oracles import records_with_ref_ce

from wmtp.config import WeightingConfig, load_config
from wmtp.data.collate import collate
from wmtp.model.loss import mtp_targets
from wmtp.model.mtp import MTPModel
from wmtp.train.step import forward_backward
from wmtp.weighting.controls import ControlWeight, control_generator, random_weights, shuffled_weights
from wmtp.registry import build_weight_fn
from wmtp.weighting.base import WeightFn
from wmtp.weighting.rho1 import Rho1Config, Rho1Weight
from wmtp.weighting.uniform import UniformWeight

VOCAB = 61


def make_weights(seed, shape=(3, 8, 3)):
    g = torch.Generator().manual_seed(seed)
    valid = torch.rand(shape, generator=g) < 0.6
    w = torch.where(valid, torch.rand(shape, generator=g) * 3, 0.0)
    w[valid.nonzero()[:3].unbind(1)] = 0.0  # a few valid zeros, as topk or min_ce_diff give
    return w, valid


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_is_a_permutation_on_exactly_the_valid_entries(seed):
    w, valid = make_weights(seed)
    out = shuffled_weights(w, valid, control_generator(7, seed, 0))
    assert torch.equal(out[valid].sort().values, w[valid].sort().values)
    assert torch.all(out[~valid] == 0)
    assert not torch.equal(out, w)  # it did move something
    assert torch.equal(out, shuffled_weights(w, valid, control_generator(7, seed, 0)))  # deterministic


@pytest.mark.parametrize("seed", range(5))
def test_random_draws_only_values_of_the_method(seed):
    w, valid = make_weights(seed)
    out = random_weights(w, valid, control_generator(7, seed, 0))
    support = set(w[valid].tolist())
    assert set(out[valid].tolist()) <= support and torch.all(out[~valid] == 0)
    assert torch.equal(out, random_weights(w, valid, control_generator(7, seed, 0)))
    assert not torch.equal(out, random_weights(w, valid, control_generator(7, seed, 1)))


def test_random_follows_the_marginal():
    valid = torch.ones(1, 4000, 1, dtype=torch.bool)
    w = torch.where(torch.arange(4000)[None, :, None] < 1000, 4.0, 0.0)  # 25% fours, 75% zeros
    out = random_weights(w, valid, control_generator(0, 0, 0))
    assert abs((out == 4.0).float().mean().item() - 0.25) < 0.03


def test_generator_depends_on_seed_step_and_micro_batch():
    draws = {
        (s, t, m): torch.randint(1 << 30, (4,), generator=control_generator(s, t, m)).tolist()
        for s in (0, 1) for t in (0, 1) for m in (0, 1)
    }  # fmt: skip
    assert len({tuple(v) for v in draws.values()}) == len(draws)


class FixedWeight(WeightFn):
    def __init__(self, w):
        self.w = w

    def weights(self, batch, valid, ce, outputs):
        return self.w


def test_control_weight_follows_the_step_not_the_number_of_calls():
    w, valid = make_weights(0)
    a = ControlWeight(FixedWeight(w), mode="shuffled", seed=3)
    a.begin_step(5)
    first = [a.weights({}, valid, None, {}), a.weights({}, valid, None, {})]  # two micro-batches of step 5
    a.begin_step(6)
    a.weights({}, valid, None, {})
    resumed = ControlWeight(FixedWeight(w), mode="shuffled", seed=3)  # a resumed run starts at step 5
    resumed.begin_step(5)
    assert torch.equal(resumed.weights({}, valid, None, {}), first[0]) and torch.equal(resumed.weights({}, valid, None, {}), first[1])
    assert not torch.equal(first[0], first[1])
    other_seed = ControlWeight(FixedWeight(w), mode="shuffled", seed=4)
    other_seed.begin_step(5)
    assert not torch.equal(other_seed.weights({}, valid, None, {}), first[0])


def test_registry_builds_controls_of_rho1():
    cfg = WeightingConfig(name="shuffled", rho1=Rho1Config(reference="x"))
    fn = build_weight_fn(cfg, seed=1)
    assert isinstance(fn, ControlWeight) and isinstance(fn.base, Rho1Weight) and fn.needs_ce
    assert fn.mode == "shuffled" and fn.seed == 1
    assert isinstance(build_weight_fn(WeightingConfig(name="rho1")), Rho1Weight)
    assert isinstance(build_weight_fn(WeightingConfig()), UniformWeight)


def make_batch(seed, B=4):
    return collate(records_with_ref_ce(B, seed, vocab=VOCAB, lengths=(8, 16), ref_max=5.0), pad_id=0)


@pytest.mark.parametrize("control", ["shuffled", "random"])
@pytest.mark.parametrize("transform", ["softmax_heads", "topk"])
def test_a_training_step_with_a_control_has_the_loss_entries_of_uniform(control, transform):
    cfg = load_config(None, ["model.d_model=32", "model.n_layers=2", "model.n_heads=3", "model.n_attn_heads=4"])
    torch.manual_seed(0)
    model = MTPModel.from_config(cfg.model, vocab_size=VOCAB, pad_id=0, bos_id=1, eos_id=2)
    batch = make_batch(1)
    n_valid = int(mtp_targets(batch["input_ids"], batch["loss_mask"], batch["attention_mask"], 3)[1].sum())
    wcfg = WeightingConfig(name=control, rho1=Rho1Config(transform=transform, min_ce_diff=0.3))

    def step(fn):
        out = forward_backward(model, batch, weight_fn=fn, wcfg=wcfg, n_valid_step=n_valid, chunk_tokens=16)
        model.zero_grad(set_to_none=True)
        return out

    uniform = step(UniformWeight())
    rho1 = step(Rho1Weight(wcfg.rho1))
    ctrl = build_weight_fn(wcfg, seed=0)
    ctrl.begin_step(0)
    out = step(ctrl)
    assert torch.equal(out.valid, uniform.valid) and torch.equal(out.valid, rho1.valid)
    assert torch.equal(out.ce, uniform.ce)  # the same tokens are scored, by the same model
    assert torch.all(out.weights[~out.valid] == 0)
    assert not torch.equal(out.weights, rho1.weights)
    if control == "shuffled":  # with normalize=mean the normalised weights are a permutation of rho1's
        torch.testing.assert_close(out.weights[out.valid].sort().values, rho1.weights[rho1.valid].sort().values)
    else:
        assert out.weights[out.valid].unique().numel() <= rho1.weights[rho1.valid].unique().numel()
