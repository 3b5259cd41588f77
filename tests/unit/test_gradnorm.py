"""gradnorm: the logit-gradient norm against autograd, its weights against naive loops, its config and errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from oracles import tiny_model

from wmtp.config import ConfigError, load_config
from wmtp.registry import build_weight_fn
from wmtp.weighting.gradnorm import GradNormConfig, GradNormWeight, gradnorm_weights, logit_grad_norm


def autograd_norms(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """‖∂ CE_n / ∂ logits_n‖₂ per row by autograd, in float64 (row n's CE reads row n only)."""
    x = logits.detach().double().requires_grad_()
    F.cross_entropy(x, targets, reduction="sum").backward()
    return x.grad.norm(dim=-1)


@pytest.mark.parametrize("scale", [0.1, 3.0, 30.0])
def test_logit_grad_norm_equals_autograd(scale):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 257, generator=g) * scale
    targets = torch.randint(257, (64,), generator=g)
    torch.testing.assert_close(logit_grad_norm(logits, targets).double(), autograd_norms(logits, targets),
                               rtol=1e-5, atol=1e-7)


def test_logit_grad_norm_at_the_extremes_and_in_half_precision():
    V = 50
    logits = torch.zeros(4, V)
    logits[0, 3] = 40.0  # certain and right: ≈ 0 (kept, not cancelled to exactly 0)
    logits[1, 7] = 40.0  # certain and wrong: ≈ √2
    logits[2, 7] = 12.0  # nearly certain and right: tiny but measured
    targets = torch.tensor([3, 3, 7, 0])
    out = logit_grad_norm(logits, targets)
    ref = autograd_norms(logits, targets)
    assert out[1].item() == pytest.approx(math.sqrt(2), abs=1e-6)
    assert out[3].item() == pytest.approx(math.sqrt((1 - 1 / V) ** 2 + (V - 1) / V**2), rel=1e-6)
    assert 0 < out[2].item() and out[2].item() == pytest.approx(ref[2].item(), rel=1e-4)
    assert torch.all((out >= 0) & (out <= math.sqrt(2) + 1e-6))
    half = logit_grad_norm(logits.bfloat16(), targets)
    assert half.dtype == torch.float32 and torch.allclose(half, out, atol=1e-3)


def test_logit_grad_norm_refuses_bad_shapes_and_targets():
    with pytest.raises(ValueError, match=r"\[N,V\]"):
        logit_grad_norm(torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        logit_grad_norm(torch.zeros(2, 5), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        logit_grad_norm(torch.zeros(2, 5), torch.tensor([-100, 1]))


def make_norms(seed: int, shape=(3, 9, 4)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    valid = torch.rand(shape, generator=g) < 0.7
    valid[0, 0] = False  # a position without any valid head
    norms = torch.where(valid, torch.rand(shape, generator=g) * math.sqrt(2), 0.0)
    return norms, valid


@pytest.mark.parametrize("power", [0.0, 1.0, 2.5])
def test_power_weights_are_the_norm_to_the_power(power):
    norms, valid = make_norms(1)
    w = gradnorm_weights(norms, valid, power=power, temperature=None)
    expected = torch.where(valid, norms**power, 0.0)
    torch.testing.assert_close(w, expected)


@pytest.mark.parametrize("temperature", [0.1, 1.0, 5.0])
def test_tempered_weights_are_a_softmax_over_the_valid_heads_times_their_count(temperature):
    norms, valid = make_norms(2)
    power = 2.0
    w = gradnorm_weights(norms, valid, power=power, temperature=temperature)
    B, T, H = norms.shape
    for b in range(B):
        for t in range(T):
            heads = [k for k in range(H) if valid[b, t, k]]
            z = [math.exp(norms[b, t, k].item() ** power / temperature) for k in heads]
            for k in range(H):
                want = len(heads) * z[heads.index(k)] / sum(z) if k in heads else 0.0
                assert w[b, t, k].item() == pytest.approx(want, rel=1e-5, abs=1e-7)
    equal = gradnorm_weights(torch.full_like(norms, 0.7), valid, power=power, temperature=temperature)
    torch.testing.assert_close(equal, valid.float())  # equal norms: weight 1 everywhere valid


def test_gradnorm_weight_reads_the_steps_norms_and_says_when_they_are_missing():
    norms, valid = make_norms(3)
    fn = GradNormWeight(GradNormConfig(power=2.0))
    assert GradNormWeight.needs_grad_norm and not GradNormWeight.needs_ce
    out = fn.weights({}, valid, None, {"logit_grad_norm": norms})
    torch.testing.assert_close(out, torch.where(valid, norms**2, 0.0))
    with pytest.raises(ValueError, match="needs_grad_norm"):
        fn.weights({}, valid, None, {})
    with pytest.raises(ValueError, match="one \\[B,T,H\\] shape"):
        fn.weights({}, valid, None, {"logit_grad_norm": norms[..., :2]})


def test_gradnorm_config_is_strict():
    cfg = load_config(None, ["weighting.name=gradnorm", "weighting.gradnorm.power=2", "weighting.gradnorm.temperature=0.5"])
    fn = build_weight_fn(cfg.weighting)
    assert isinstance(fn, GradNormWeight) and fn.cfg.power == 2.0 and fn.cfg.temperature == 0.5
    assert GradNormConfig().power == 1.0 and GradNormConfig().temperature is None
    for bad, message in (("weighting.gradnorm.power=-1", "weighting.gradnorm.power"),
                         ("weighting.gradnorm.temperature=0", "weighting.gradnorm.temperature"),
                         ("weighting.gradnorm.tmp=1", "allowed keys are power, temperature")):
        with pytest.raises(ConfigError, match=message):
            load_config(None, ["weighting.name=gradnorm", bad])


class TwoPassGradNorm(GradNormWeight):
    """gradnorm forced onto the two-pass path (its reference form `weights`)."""

    def has_local_weights(self) -> bool:
        return False


@pytest.mark.parametrize("temperature", [None, 0.5])
def test_the_one_pass_equals_two_passes_and_the_steps_norms_equal_the_reference_form(temperature):
    """The training path's g (inside the chunked CE) = logit_grad_norm on every head's materialised logits; one pass
    and two passes give the same loss, weights and gradients."""
    from test_one_pass import VOCAB, _assert_same, _step, make_records

    from wmtp.config import WeightingConfig
    from wmtp.data.collate import collate
    from wmtp.train.step import batch_targets, one_pass

    cfg = GradNormConfig(power=10.0, temperature=temperature)  # a random model's g ≈ 1: a power spreads them
    batch = collate(make_records(4, seed=21), pad_id=0)
    model = tiny_model(3, seed=8, vocab=VOCAB)
    targets, valid = batch_targets(batch, 3)
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["attention_mask"])  # [B,T,H,V]
    reference = torch.zeros(valid.shape)
    reference[valid] = logit_grad_norm(logits[valid], targets[valid])
    seen = []

    class Recording(TwoPassGradNorm):
        def weights(self, batch, valid, ce, outputs):
            seen.append(outputs["logit_grad_norm"])
            return super().weights(batch, valid, ce, outputs)

    assert one_pass(GradNormWeight(cfg), WeightingConfig()) and not one_pass(Recording(cfg), WeightingConfig())
    one, grads_one = _step(model, batch, GradNormWeight(cfg), WeightingConfig(), 5)
    two, grads_two = _step(model, batch, Recording(cfg), WeightingConfig(), 5)
    torch.testing.assert_close(seen[0], reference, atol=1e-5, rtol=1e-5)
    assert one.weights[one.valid].std() > 0.05  # not uniform: the comparison can fail
    _assert_same(one, two, grads_one, grads_two)


@pytest.mark.parametrize("margin", [16.0, 20.0])
def test_the_training_kernels_norm_does_not_cancel_on_confident_rows(margin):
    """p_y ≈ 1: Σp² − 2p_y + 1 would cancel to 0 in fp32 (margin 20: about half the rows); sums over the other
    classes keep g ≈ e^(−margin)·… to float precision, as the reference form does."""
    from wmtp.model.loss import ce_and_grad_norm

    g = torch.Generator().manual_seed(3)
    N, D, V = 300, 6, 50
    targets = torch.randint(0, V, (N,), generator=g)
    hidden = torch.cat([torch.randn(N, D, generator=g) * 0.1, F.one_hot(targets, V).float() * margin], dim=1)
    unembed = torch.cat([torch.randn(V, D, generator=g), torch.eye(V)], dim=1)  # logits = noise + margin at y
    _, norms = ce_and_grad_norm(hidden, unembed, targets, chunk_tokens=64)
    reference = logit_grad_norm(hidden @ unembed.T, targets)
    assert reference.max() < 1e-4 and (norms > 0).all()
    torch.testing.assert_close(norms, reference, rtol=1e-4, atol=0.0)
