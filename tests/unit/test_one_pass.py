"""The one-pass weighted step (local weights) against the two-pass step, the logit-gradient norm against autograd,
and the deferred `mean` factor (wmtp.train.step, wmtp.model.loss)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from oracles import records_with_ref_ce, tiny_model

from wmtp.config import WeightingConfig
from wmtp.data.collate import EncodedRecord, collate, pack_records
from wmtp.model.loss import Unembedding, ce_and_grad_norm, chunked_weighted_ce
from wmtp.train.distributed import Distributed
from wmtp.train.step import batch_targets, deferred_mean_factor, forward_backward, one_pass, step_gradients
from wmtp.weighting.base import WeightFn
from wmtp.weighting.rho1 import Rho1Config, Rho1Weight, rho1_weights

VOCAB = 97


def make_records(n: int, seed: int, max_len: int = 16) -> list[EncodedRecord]:
    return records_with_ref_ce(n, seed, vocab=VOCAB, lengths=(6, max_len))


class TwoPassRho1(Rho1Weight):
    """rho1 forced onto the two-pass path (its reference form `weights`); local_weights must not be called."""

    def has_local_weights(self) -> bool:
        return False

    def local_weights(self, ce, valid, extras, outputs):
        raise AssertionError("the two-pass path called local_weights")


class OnePassRho1(Rho1Weight):
    """rho1 on the one-pass path; `weights` must not be called."""

    def weights(self, batch, valid, ce, outputs):
        raise AssertionError("the one-pass path called weights")


def _grads(model):
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def _step(model, batch, fn, wcfg, chunk, n_valid=None):
    n_valid = n_valid or int(batch_targets(batch, model.n_heads)[1].sum())
    out = forward_backward(model, batch, weight_fn=fn, wcfg=wcfg, n_valid_step=n_valid, chunk_tokens=chunk)
    return out, _grads(model)


def _assert_same(a, b, grads_a, grads_b):
    assert a.loss == pytest.approx(b.loss, rel=1e-6, abs=1e-7)
    assert torch.equal(a.valid, b.valid)
    torch.testing.assert_close(a.ce, b.ce, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(a.weights, b.weights, atol=1e-6, rtol=1e-6)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 0
    for name in grads_a:
        scale = grads_b[name].abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-6 * max(scale, 1.0), rtol=1e-5, msg=name)


@pytest.mark.parametrize("excess,min_ce_diff", [("signed", 0.0), ("abs", 0.0), ("signed", 0.8), ("abs", 1.5)])
@pytest.mark.parametrize("normalize,head_coefs,clip", [
    ("mean", None, None), ("mean", [1.0, 0.5, 0.25], None), ("per_position", None, None),
    ("per_position", [0.3, 1.0, 2.0], (0.2, 1.3)),
])  # fmt: skip
@pytest.mark.parametrize("chunk", [4, 64])
@pytest.mark.parametrize("transform", ["softmax_heads", "softmax_batch"])
def test_one_pass_equals_two_passes(excess, min_ce_diff, normalize, head_coefs, clip, chunk, transform):
    """softmax_batch with chunk 4: the running max grows over many chunks (online max-rescaling)."""
    rcfg = Rho1Config(excess=excess, min_ce_diff=min_ce_diff, temperature=0.7, transform=transform)
    clip_min, clip_max = clip or (None, None)
    wcfg = WeightingConfig(normalize=normalize, head_coefs=head_coefs, clip_min=clip_min, clip_max=clip_max)
    assert one_pass(OnePassRho1(rcfg), wcfg) and not one_pass(TwoPassRho1(rcfg), wcfg)
    batch = collate(make_records(4, seed=3), pad_id=0)
    model = tiny_model(3, seed=5, vocab=VOCAB)
    one, grads_one = _step(model, batch, OnePassRho1(rcfg), wcfg, chunk)
    two, grads_two = _step(model, batch, TwoPassRho1(rcfg), wcfg, chunk)
    assert one.weights[one.valid].std() > 0.05  # the weights are not uniform: the test can tell them apart
    _assert_same(one, two, grads_one, grads_two)


def test_one_pass_with_packed_rows_and_trunk_layer_free_head1():
    rcfg = Rho1Config(excess="signed", min_ce_diff=0.5)
    rows = pack_records(make_records(8, seed=7, max_len=12), max_len=40)
    assert any(len(r.segments) > 1 for r in rows)
    batch = collate(rows, pad_id=0)
    model = tiny_model(3, head1=False, seed=2, vocab=VOCAB)
    one, grads_one = _step(model, batch, OnePassRho1(rcfg), WeightingConfig(), 5)
    two, grads_two = _step(model, batch, TwoPassRho1(rcfg), WeightingConfig(), 5)
    _assert_same(one, two, grads_one, grads_two)


def test_one_pass_rho1_stats_equal_the_two_pass_stats():
    rcfg = Rho1Config(excess="abs", min_ce_diff=1.0)
    batch = collate(make_records(4, seed=9), pad_id=0)
    model = tiny_model(3, seed=1, vocab=VOCAB)
    stats = []
    for fn in (OnePassRho1(rcfg), TwoPassRho1(rcfg)):
        fn.begin_step(0)
        _step(model, batch, fn, WeightingConfig(), 7)
        stats.append(fn.stats())
    assert stats[0].keys() == stats[1].keys() and stats[0]["excess_frac_below_min"] > 0
    for key in stats[0]:
        assert stats[0][key] == pytest.approx(stats[1][key], rel=1e-5, abs=1e-6), key


def test_deferred_mean_factor_over_micro_batches_equals_one_batch():
    """Two micro-batches with defer_mean, every .grad scaled by n_valid/Σw at the end = the whole batch at once."""
    rcfg = Rho1Config(excess="signed", min_ce_diff=1.0)  # candidates < valid entries: Σw ≠ n_valid
    batch = collate(make_records(4, seed=11), pad_id=0)
    model = tiny_model(3, seed=4, vocab=VOCAB)
    n_valid = int(batch_targets(batch, 3)[1].sum())
    whole, grads_whole = _step(model, batch, OnePassRho1(rcfg), WeightingConfig(), 8)
    fn = OnePassRho1(rcfg)
    outs = [forward_backward(model, {k: v[rows] for k, v in batch.items()}, weight_fn=fn, wcfg=WeightingConfig(),
                             n_valid_step=n_valid, chunk_tokens=8, defer_mean=True)
            for rows in (slice(0, 1), slice(1, 4))]  # fmt: skip
    factor = n_valid / sum(o.weight_total for o in outs)
    assert abs(factor - 1.0) > 1e-3  # the factor matters: forgetting it fails the test
    for p in model.parameters():
        if p.grad is not None:
            p.grad.mul_(factor)
    grads = _grads(model)
    assert sum(o.loss for o in outs) * factor == pytest.approx(whole.loss, rel=1e-6)
    for name in grads_whole:
        torch.testing.assert_close(grads[name], grads_whole[name], atol=1e-6, rtol=1e-5, msg=name)


def test_local_weights_equal_the_reference_weights_chunk_by_chunk():
    g = torch.Generator().manual_seed(0)
    B, T, H = 3, 9, 4
    ce, ref_ce = torch.rand(B, T, H, generator=g) * 5, torch.rand(B, T, generator=g) * 5
    valid = torch.rand(B, T, H, generator=g) > 0.3
    ce = torch.where(valid, ce, 0.0)
    for excess in ("signed", "abs"):
        cfg = Rho1Config(excess=excess, min_ce_diff=0.7, temperature=0.5)
        fn = Rho1Weight(cfg)
        batch = {"ref_ce": ref_ce}
        ref = rho1_weights(ce, ref_ce, valid, excess=excess, temperature=0.5, min_ce_diff=0.7,
                           transform="softmax_heads", topk_percent=60.0)  # fmt: skip
        assert torch.equal(fn.weights(batch, valid, ce, {}), ref)
        extras = {k: v.flatten(0, 1) for k, v in fn.local_extras(batch, valid).items()}
        flat_ce, flat_valid = ce.flatten(0, 1), valid.flatten(0, 1)
        got = torch.cat([fn.local_weights(flat_ce[s : s + 5], flat_valid[s : s + 5],
                                          {k: v[s : s + 5] for k, v in extras.items()}, {})
                         for s in range(0, B * T, 5)])  # fmt: skip
        torch.testing.assert_close(got.view(B, T, H), ref, atol=1e-6, rtol=1e-6)
    assert not Rho1Weight(Rho1Config(transform="topk")).has_local_weights()
    fn = Rho1Weight(Rho1Config(transform="softmax_batch", excess="signed", min_ce_diff=0.7, temperature=0.5))
    assert fn.has_local_weights() and fn.local_weights_are_logs()
    extras = {k: v.flatten(0, 1) for k, v in fn.local_extras({"ref_ce": ref_ce}, valid).items()}
    logs = fn.local_weights(ce.flatten(0, 1), valid.flatten(0, 1), extras, {}).view(B, T, H)
    ref = rho1_weights(ce, ref_ce, valid, excess="signed", temperature=0.5, min_ce_diff=0.7, transform="softmax_batch",
                       topk_percent=60.0)  # fmt: skip
    assert torch.isneginf(logs[ref == 0]).all()
    torch.testing.assert_close(torch.softmax(logs.flatten(), 0).view(B, T, H) * valid.sum(), ref, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("transform", ["softmax_heads", "softmax_batch"])
@pytest.mark.parametrize("normalize", ["mean", "per_position"])
def test_step_gradients_one_pass_equals_two_passes_over_micro_batches(transform, normalize):
    """The trainer's path (step_gradients) over two micro-batches of unequal size: one pass (deferred `mean`, per
    micro-batch constants for softmax_batch's log-weights) = two passes (every raw weight first, Σw over the step)."""
    rcfg = Rho1Config(excess="signed", min_ce_diff=1.0, transform=transform, temperature=0.6)
    batch = collate(make_records(5, seed=17), pad_id=0)
    micro = [{k: v[rows] for k, v in batch.items()} for rows in (slice(0, 2), slice(2, 5))]
    model = tiny_model(3, seed=9, vocab=VOCAB)
    wcfg = WeightingConfig(normalize=normalize)
    n_valid = sum(int(batch_targets(b, 3)[1].sum()) for b in micro)
    single = Distributed(rank=0, world_size=1, mesh=None)
    results = {}
    for name, fn in (("one", OnePassRho1(rcfg)), ("two", TwoPassRho1(rcfg))):
        outs, defer = step_gradients(model, micro, weight_fn=fn, wcfg=wcfg, n_valid_step=n_valid, n_tokens_step=0,
                                     chunk_tokens=4, dist=single)  # fmt: skip
        assert defer == (name == "one" and normalize == "mean")
        loss = sum(o.loss for o in outs)
        if defer:
            loss *= deferred_mean_factor(model, n_valid, sum(o.weight_total for o in outs))
        results[name] = loss, _grads(model)
    assert results["one"][0] == pytest.approx(results["two"][0], rel=1e-6)
    for name, grad in results["two"][1].items():
        scale = max(grad.abs().max().item(), 1.0)
        torch.testing.assert_close(results["one"][1][name], grad, atol=1e-6 * scale, rtol=1e-5, msg=name)


def test_two_pass_where_a_weight_needs_the_whole_step():
    rho1 = Rho1Weight(Rho1Config())
    assert one_pass(rho1, WeightingConfig())
    assert not one_pass(rho1, WeightingConfig(clip_max=2.0))  # clipping after `mean` needs the step's Σw first
    assert one_pass(rho1, WeightingConfig(normalize="per_position", clip_max=2.0))


# ---- the logit-gradient norm ‖∂ce/∂logits‖₂ -----------------------------------------------------------------


def _autograd_norms(hidden, unembed, targets):
    logits = (hidden @ unembed.T).detach().requires_grad_()
    ce = F.cross_entropy(logits, targets, reduction="none")
    grads = [torch.autograd.grad(ce[i], logits, retain_graph=True)[0][i] for i in range(len(targets))]
    return ce.detach(), torch.stack(grads).norm(dim=-1)


@pytest.mark.parametrize("chunk", [3, 50])
def test_grad_norm_matches_autograd(chunk):
    g = torch.Generator().manual_seed(1)
    N, D, V = 17, 8, 11
    hidden, unembed = torch.randn(N, D, generator=g), torch.randn(V, D, generator=g)
    targets = torch.randint(0, V, (N,), generator=g)
    hidden[0] = unembed[targets[0]] * 4  # a confident, correct row: a small norm
    ref_ce, ref_norm = _autograd_norms(hidden, unembed, targets)
    assert ref_norm.min() < 0.2 < ref_norm.max()
    ce, norm = ce_and_grad_norm(hidden, unembed, targets, chunk_tokens=chunk)
    torch.testing.assert_close(ce, ref_ce, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(norm, ref_norm, atol=1e-5, rtol=1e-5)
    seen = []
    kernel = Unembedding(unembed, chunk, dtype=torch.float32, grad=None)
    chunked_weighted_ce(hidden, targets, lambda s, c, v, n: seen.append(n) or torch.zeros_like(c), kernel,
                        chunk_rows=chunk, grad_norm=True)  # fmt: skip
    torch.testing.assert_close(torch.cat(seen), ref_norm, atol=1e-5, rtol=1e-5)


class GradNormWeight(WeightFn):
    """w = 1 + logit_grad_norm; records what the step passed (both paths)."""

    needs_grad_norm = True

    def __init__(self, local: bool):
        self.local, self.seen = local, []

    def has_local_weights(self) -> bool:
        return self.local

    def weights(self, batch, valid, ce, outputs):
        assert ce is None  # needs_ce is False
        self.seen.append(outputs["logit_grad_norm"])
        return 1.0 + outputs["logit_grad_norm"]

    def local_weights(self, ce, valid, extras, outputs):
        self.seen.append(outputs["logit_grad_norm"])
        return 1.0 + outputs["logit_grad_norm"]


def test_step_passes_the_logit_grad_norm_on_both_paths():
    batch = collate(make_records(3, seed=13), pad_id=0)
    model = tiny_model(3, seed=6, vocab=VOCAB)
    targets, valid = batch_targets(batch, 3)
    with torch.no_grad():  # oracle: full logits of every head, autograd's ‖∂ce/∂logits‖ per valid (t,k)
        logits = model(batch["input_ids"], batch["attention_mask"])  # [B,T,H,V]
    ref = torch.zeros(valid.shape)
    for b, t, k in valid.nonzero().tolist():
        row = logits[b, t, k].clone().requires_grad_()
        F.cross_entropy(row[None], targets[b, t, k][None]).backward()
        ref[b, t, k] = row.grad.norm()
    two_fn, one_fn = GradNormWeight(local=False), GradNormWeight(local=True)
    two, grads_two = _step(model, batch, two_fn, WeightingConfig(), 6)
    one, grads_one = _step(model, batch, one_fn, WeightingConfig(), 6)
    (seen_two,) = two_fn.seen
    assert not seen_two.requires_grad
    torch.testing.assert_close(seen_two, ref, atol=1e-5, rtol=1e-5)
    positions = valid.any(-1).flatten()
    torch.testing.assert_close(torch.cat(one_fn.seen), ref.flatten(0, 1)[positions], atol=1e-5, rtol=1e-5)
    _assert_same(one, two, grads_one, grads_two)


def test_controls_copy_the_grad_norm_declaration():
    from wmtp.weighting.controls import ControlWeight

    control = ControlWeight(GradNormWeight(local=True), mode="shuffled", seed=0)
    assert control.needs_grad_norm and not control.has_local_weights()


def test_bf16_autocast_runs_the_unembedding_in_bf16_with_an_fp32_gradient_buffer():
    rcfg = Rho1Config(excess="abs", min_ce_diff=0.5)
    batch = collate(make_records(3, seed=17), pad_id=0)
    model = tiny_model(3, seed=8, vocab=VOCAB)
    n_valid = int(batch_targets(batch, 3)[1].sum())
    results = []
    for fn in (OnePassRho1(rcfg), TwoPassRho1(rcfg), OnePassRho1(rcfg)):
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if len(results) < 2 else None
        out = forward_backward(model, batch, weight_fn=fn, wcfg=WeightingConfig(), n_valid_step=n_valid,
                               chunk_tokens=8, autocast=amp)  # fmt: skip
        results.append((out, _grads(model)))
    (one, g_one), (two, g_two), (fp32, g_fp32) = results
    assert model.unembed.dtype == torch.float32 and g_one["trunk.model.embed_tokens.weight"].dtype == torch.float32
    assert one.loss == pytest.approx(two.loss, rel=1e-3)  # the same bf16 matmuls on both paths
    assert one.loss != fp32.loss  # bf16 is in use: the loss differs from fp32 ...
    assert one.loss == pytest.approx(fp32.loss, rel=2e-2)  # ... within bf16 precision
    for name in g_fp32:
        torch.testing.assert_close(g_one[name], g_two[name], atol=2e-3, rtol=5e-2, msg=name)
    kernel = Unembedding(model.unembed, 4, dtype=torch.bfloat16, grad=torch.zeros(model.unembed.shape))
    assert kernel.low_buf.dtype == kernel.grad_w_buf.dtype == torch.bfloat16 and kernel.grad.dtype == torch.float32


def test_a_negative_local_weight_is_an_error():
    class Negative(GradNormWeight):
        def local_weights(self, ce, valid, extras, outputs):
            return ce - 100.0  # ce ≈ log 97 ≈ 4.6: every weight < 0

    batch = collate(make_records(2, seed=19), pad_id=0)
    model = tiny_model(3, seed=6, vocab=VOCAB)
    with pytest.raises(ValueError, match=">= 0"):
        _step(model, batch, Negative(local=True), WeightingConfig(), 6)
