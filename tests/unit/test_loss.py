"""Alignment, chunked/fused CE, weighted reduction and the training step, each against a naive reference.

Every oracle here is written independently of the code under test: explicit loops over b, t, k and
full-logits `F.cross_entropy` (DESIGN §4, §6).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wmtp.config import WeightingConfig
from wmtp.model.loss import linear_ce, mtp_targets, reduce_weighted, weighted_linear_ce
from wmtp.train.step import forward_backward, raw_step_weights
from wmtp.weighting.base import WeightFn
from wmtp.weighting.uniform import UniformWeight

from oracles import evaluate_ce, naive_normalize, tiny_model

V = 97


PAD, BOS, EOS = 0, 1, 2


# ---- naive references ----------------------------------------------------------------------------


def naive_targets(input_ids, loss_mask, attention_mask, n_heads):
    """valid[b,t,k-1] = (t+k < T) and loss_mask[b,t+k] and attention_mask[b,t]; targets = ids[b,t+k] or -100."""
    B, T = input_ids.shape
    targets = [[[-100] * n_heads for _ in range(T)] for _ in range(B)]
    valid = [[[False] * n_heads for _ in range(T)] for _ in range(B)]
    for b in range(B):
        for t in range(T):
            for k in range(1, n_heads + 1):
                j = t + k
                if j < T and bool(loss_mask[b, j]) and bool(attention_mask[b, t]):
                    valid[b][t][k - 1] = True
                    targets[b][t][k - 1] = int(input_ids[b, j])
    return torch.tensor(targets, dtype=torch.long).reshape(B, T, n_heads), torch.tensor(valid).reshape(
        B, T, n_heads
    )


def naive_ce_grid(logits, targets):
    """ce[b,t,k] = F.cross_entropy on full logits [B,T,H,V] (0 where target is -100)."""
    B, T, H, Vv = logits.shape
    ce = F.cross_entropy(logits.reshape(-1, Vv), targets.reshape(-1), reduction="none", ignore_index=-100)
    return ce.reshape(B, T, H)




def make_batch(seed=0, *, B=4, T=12, left_pad=True):
    """Rows: prompt + completion (no padding); right padding; left padding (optional); short row, right pad."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (B, T), generator=g)
    attn = torch.ones(B, T, dtype=torch.bool)
    loss = torch.zeros(B, T, dtype=torch.bool)
    # row 0: prompt of 4 tokens, completion to the end
    loss[0, 4:] = True
    # row 1: length 8 (right padding), prompt 3
    attn[1, 8:] = False
    loss[1, 3:8] = True
    if B > 2:
        if left_pad:  # row 2: 3 pad tokens on the left, prompt 2, completion to the end
            attn[2, :3] = False
            loss[2, 5:] = True
        else:
            loss[2, 2:] = True
    if B > 3:  # row 3: length 5, prompt 2
        attn[3, 5:] = False
        loss[3, 2:5] = True
    ids[~attn] = PAD
    return {
        "input_ids": ids,
        "attention_mask": attn,
        "loss_mask": loss,
        "is_correct": torch.ones(B),
        "ids": [f"r{i}" for i in range(B)],
    }


# ---- mtp_targets ---------------------------------------------------------------------------------


def _check_targets(ids, loss_mask, attn, H):
    targets, valid = mtp_targets(ids, loss_mask, attn, H)
    exp_t, exp_v = naive_targets(ids, loss_mask, attn, H)
    assert targets.shape == (ids.shape[0], ids.shape[1], H)
    assert valid.shape == (ids.shape[0], ids.shape[1], H)
    assert targets.dtype == torch.long
    assert valid.dtype == torch.bool
    assert torch.equal(valid, exp_v)
    assert torch.equal(targets, exp_t)


@pytest.mark.parametrize("H", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("left_pad", [False, True])
def test_mtp_targets_structured(H, left_pad):
    b = make_batch(seed=H, left_pad=left_pad)
    _check_targets(b["input_ids"], b["loss_mask"], b["attention_mask"], H)


def test_mtp_targets_prompt_and_padding_hand_example():
    # T=6, H=2. Row 0: prompt [0,1], completion [2..5]. Row 1: left pad [0], prompt [1], completion [2,3], right pad [4,5].
    ids = torch.tensor([[10, 11, 12, 13, 14, 15], [0, 21, 22, 23, 0, 0]])
    attn = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 0, 0]], dtype=torch.bool)
    loss = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0]], dtype=torch.bool)
    targets, valid = mtp_targets(ids, loss, attn, 2)
    X = -100
    expected = torch.tensor(
        [
            [[X, 12], [12, 13], [13, 14], [14, 15], [15, X], [X, X]],
            # t=0 is padding (attn False) so nothing is predicted from it, even though t+2=2 is a loss token
            [[X, X], [22, 23], [23, X], [X, X], [X, X], [X, X]],
        ]
    )
    assert torch.equal(targets, expected)
    assert torch.equal(valid, expected != -100)


@pytest.mark.parametrize("T", [1, 2, 3])
@pytest.mark.parametrize("H", [1, 4])
def test_mtp_targets_short_sequences(T, H):
    ids = torch.arange(5, 5 + 2 * T).reshape(2, T)
    attn = torch.ones(2, T, dtype=torch.bool)
    loss = torch.ones(2, T, dtype=torch.bool)
    loss[1, 0] = False
    _check_targets(ids, loss, attn, H)
    targets, valid = mtp_targets(ids, loss, attn, H)
    # nothing can be predicted beyond the sequence end
    for k in range(1, H + 1):
        assert not valid[:, max(T - k, 0) :, k - 1].any()


@pytest.mark.parametrize("seed", range(40))
def test_mtp_targets_random_masks(seed):
    g = torch.Generator().manual_seed(seed)
    B = int(torch.randint(1, 5, (1,), generator=g))
    T = int(torch.randint(1, 14, (1,), generator=g))
    H = int(torch.randint(1, 6, (1,), generator=g))
    ids = torch.randint(0, V, (B, T), generator=g)
    attn = torch.rand(B, T, generator=g) < 0.7
    loss = torch.rand(B, T, generator=g) < 0.6
    _check_targets(ids, loss, attn, H)


@pytest.mark.parametrize("mask_dtype", [torch.long, torch.int32, torch.uint8, torch.float32])
def test_mtp_targets_int_masks_equal_bool(mask_dtype):
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, V, (3, 9), generator=g)
    attn = torch.rand(3, 9, generator=g) < 0.8
    loss = torch.rand(3, 9, generator=g) < 0.6
    t_bool, v_bool = mtp_targets(ids, loss, attn, 3)
    t_int, v_int = mtp_targets(ids, loss.to(mask_dtype), attn.to(mask_dtype), 3)
    assert torch.equal(t_bool, t_int)
    assert torch.equal(v_bool, v_int)
    assert v_int.dtype == torch.bool and t_int.dtype == torch.long
    _check_targets(ids, loss.to(mask_dtype), attn.to(mask_dtype), 3)


def test_mtp_targets_int32_ids_give_long_targets():
    ids = torch.randint(3, V, (2, 6), dtype=torch.int32)
    ones = torch.ones(2, 6, dtype=torch.bool)
    targets, _ = mtp_targets(ids, ones, ones, 2)
    assert targets.dtype == torch.long
    _check_targets(ids, ones, ones, 2)


@pytest.mark.parametrize(
    "shapes",
    [((2, 5), (2, 4), (2, 5)), ((2, 5), (2, 5), (3, 5)), ((10,), (10,), (10,)), ((2, 5, 1), (2, 5, 1), (2, 5, 1))],
)
def test_mtp_targets_bad_shape_raises(shapes):
    s_ids, s_loss, s_attn = shapes
    with pytest.raises(ValueError):
        mtp_targets(
            torch.zeros(s_ids, dtype=torch.long),
            torch.ones(s_loss, dtype=torch.bool),
            torch.ones(s_attn, dtype=torch.bool),
            2,
        )


def test_mtp_targets_bad_n_heads_raises():
    ones = torch.ones(1, 4, dtype=torch.bool)
    with pytest.raises(ValueError):
        mtp_targets(torch.zeros(1, 4, dtype=torch.long), ones, ones, 0)


# ---- linear_ce -----------------------------------------------------------------------------------


def _ce_inputs(N=13, D=8, seed=0, n_ignored=3):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, D, generator=g)
    unembed = torch.randn(V, D, generator=g)
    targets = torch.randint(0, V, (N,), generator=g)
    targets[torch.randperm(N, generator=g)[:n_ignored]] = -100
    return hidden, unembed, targets


@pytest.mark.parametrize("chunk", [1, 4, 13, 64])
def test_linear_ce_matches_full_logits(chunk):
    hidden, unembed, targets = _ce_inputs()
    h1, w1 = hidden.clone().requires_grad_(), unembed.clone().requires_grad_()
    h2, w2 = hidden.clone().requires_grad_(), unembed.clone().requires_grad_()
    ce = linear_ce(h1, w1, targets, chunk_tokens=chunk)
    ref = F.cross_entropy(h2 @ w2.T, targets, reduction="none", ignore_index=-100)
    assert ce.shape == (13,) and ce.dtype == torch.float32
    torch.testing.assert_close(ce, ref, atol=1e-5, rtol=1e-5)
    assert torch.all(ce[targets == -100] == 0)
    # a non-uniform upstream gradient exercises every row
    g = torch.linspace(0.5, 2.0, 13)
    (ce * g).sum().backward()
    (ref * g).sum().backward()
    torch.testing.assert_close(h1.grad, h2.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(w1.grad, w2.grad, atol=1e-5, rtol=1e-4)


# ---- weighted_linear_ce --------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 5, 13, 100])
def test_weighted_linear_ce_matches_naive(chunk):
    hidden, unembed, targets = _ce_inputs(n_ignored=0, seed=1)
    coef = torch.rand(13, generator=torch.Generator().manual_seed(2)) * 2
    h1, w1 = hidden.clone().requires_grad_(), unembed.clone().requires_grad_()
    h2, w2 = hidden.clone().requires_grad_(), unembed.clone().requires_grad_()
    loss, ce = weighted_linear_ce(h1, w1, targets, coef, chunk_tokens=chunk)
    ref_ce = F.cross_entropy(h2 @ w2.T, targets, reduction="none")
    ref_loss = (coef * ref_ce).sum()
    assert loss.dim() == 0
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ce, ref_ce.detach(), atol=1e-5, rtol=1e-5)
    assert not ce.requires_grad
    loss.backward()
    ref_loss.backward()
    torch.testing.assert_close(h1.grad, h2.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(w1.grad, w2.grad, atol=1e-5, rtol=1e-4)


def test_weighted_linear_ce_scales_with_upstream_gradient():
    hidden, unembed, targets = _ce_inputs(n_ignored=0, seed=3)
    coef = torch.rand(13, generator=torch.Generator().manual_seed(4))
    h1, w1 = hidden.clone().requires_grad_(), unembed.clone().requires_grad_()
    h2, w2 = hidden.clone().requires_grad_(), unembed.clone().requires_grad_()
    loss, _ = weighted_linear_ce(h1, w1, targets, coef, chunk_tokens=4)
    (-2.5 * loss).backward()
    ref = -2.5 * (coef * F.cross_entropy(h2 @ w2.T, targets, reduction="none")).sum()
    ref.backward()
    torch.testing.assert_close(h1.grad, h2.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(w1.grad, w2.grad, atol=1e-5, rtol=1e-4)


def test_weighted_linear_ce_rejects_ignored_targets():
    hidden, unembed, targets = _ce_inputs(n_ignored=1)
    with pytest.raises(ValueError):
        weighted_linear_ce(hidden, unembed, targets, torch.ones(13), chunk_tokens=4)


def test_weighted_linear_ce_coef_gets_no_gradient():
    hidden, unembed, targets = _ce_inputs(n_ignored=0)
    hidden.requires_grad_()
    coef = torch.rand(13).requires_grad_()
    loss, _ = weighted_linear_ce(hidden, unembed, targets, coef, chunk_tokens=4)
    loss.backward()
    assert coef.grad is None
    assert hidden.grad is not None


# ---- reduce_weighted -----------------------------------------------------------------------------


def _naive_reduce(ce, w, valid, lam):
    B, T, H = ce.shape
    num, den = 0.0, 0
    for b in range(B):
        for t in range(T):
            for k in range(H):
                if valid[b, t, k]:
                    num = num + w[b, t, k] * ce[b, t, k] * (1.0 if lam is None else lam[k])
                    den += 1
    return num / max(den, 1)


@pytest.mark.parametrize("with_coefs", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_reduce_weighted_matches_loop(seed, with_coefs):
    g = torch.Generator().manual_seed(seed)
    ce = torch.rand(3, 7, 4, generator=g) * 5
    w = torch.rand(3, 7, 4, generator=g) * 2
    valid = torch.rand(3, 7, 4, generator=g) < 0.6
    lam = torch.tensor([1.0, 0.5, 0.25, 2.0]) if with_coefs else None
    got = reduce_weighted(ce, w, valid, lam)
    torch.testing.assert_close(got, torch.as_tensor(_naive_reduce(ce, w, valid, lam)), atol=1e-6, rtol=1e-6)


def test_reduce_weighted_uniform_is_mean_ce():
    g = torch.Generator().manual_seed(0)
    ce = torch.rand(2, 6, 3, generator=g)
    valid = torch.rand(2, 6, 3, generator=g) < 0.5
    got = reduce_weighted(ce, valid.float(), valid)
    torch.testing.assert_close(got, ce[valid].mean())


def test_reduce_weighted_invalid_entries_do_not_matter():
    g = torch.Generator().manual_seed(1)
    ce = torch.rand(2, 6, 3, generator=g)
    w = torch.rand(2, 6, 3, generator=g)
    valid = torch.rand(2, 6, 3, generator=g) < 0.5
    ref = reduce_weighted(ce, w, valid)
    ce2, w2 = ce.clone(), w.clone()
    ce2[~valid] = 1e6
    w2[~valid] = 1e6
    torch.testing.assert_close(reduce_weighted(ce2, w2, valid), ref)


def test_reduce_weighted_non_finite_invalid_entries_do_not_matter():
    """Σ_valid: a non-finite weight or ce at an invalid entry must not turn the loss into NaN."""
    g = torch.Generator().manual_seed(3)
    ce = torch.rand(2, 6, 3, generator=g)
    w = torch.rand(2, 6, 3, generator=g)
    valid = torch.rand(2, 6, 3, generator=g) < 0.5
    ref = _naive_reduce(ce, w, valid, None)
    ce2, w2 = ce.clone(), w.clone()
    bad = (~valid).nonzero().tolist()
    ce2[tuple(bad[0])] = float("inf")
    w2[tuple(bad[1])] = float("inf")
    w2[tuple(bad[2])] = float("nan")
    torch.testing.assert_close(reduce_weighted(ce2, w2, valid), torch.as_tensor(ref))


def test_reduce_weighted_weights_get_no_gradient():
    g = torch.Generator().manual_seed(2)
    ce = (torch.rand(2, 5, 3, generator=g) * 3).requires_grad_()
    w = torch.rand(2, 5, 3, generator=g).requires_grad_()
    valid = torch.rand(2, 5, 3, generator=g) < 0.7
    reduce_weighted(ce, w, valid).backward()
    assert w.grad is None
    expected = torch.where(valid, w.detach(), 0.0) / valid.sum()
    torch.testing.assert_close(ce.grad, expected)


# ---- per-head CE through the model ---------------------------------------------------------------


@pytest.mark.parametrize("head1", [True, False])
@pytest.mark.parametrize("chunk", [3, 16, 1000])
def test_evaluate_ce_matches_full_logits(head1, chunk):
    model = tiny_model(3, head1=head1).eval()
    batch = make_batch(seed=5)
    ce, valid = evaluate_ce(model, batch, chunk_tokens=chunk)
    targets, exp_valid = naive_targets(batch["input_ids"], batch["loss_mask"], batch["attention_mask"], 3)
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["attention_mask"])
    assert logits.shape == (4, 12, 3, V)
    ref = naive_ce_grid(logits, targets)
    assert torch.equal(valid, exp_valid)
    assert ce.shape == (4, 12, 3) and ce.dtype == torch.float32
    torch.testing.assert_close(ce[valid], ref[valid], atol=1e-5, rtol=1e-5)
    assert torch.all(ce[~valid] == 0)
    assert not ce.requires_grad


def test_h1_mtp_loss_equals_trunk_causal_lm_loss():
    model = tiny_model(1, head1=True, n_layers=3, seed=3).eval()
    batch = make_batch(seed=9, left_pad=False)  # prompts and right padding
    ce, valid = evaluate_ce(model, batch, chunk_tokens=7)
    labels = torch.where(batch["loss_mask"], batch["input_ids"], -100)
    with torch.no_grad():
        hf = model.trunk(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"].long(), labels=labels
        ).loss
    ours = ce[valid].mean()
    assert abs(ours.item() - hf.item()) < 1e-6, (ours.item(), hf.item())


# ---- forward_backward ----------------------------------------------------------------------------


class CEWeight(WeightFn):
    """A ce-dependent weight fn: larger weight for harder tokens, varying over heads."""

    needs_ce = True

    def __init__(self):
        self.seen_ce = None

    def weights(self, batch, valid, ce, outputs):
        assert ce is not None
        self.seen_ce = ce.clone()
        H = ce.shape[-1]
        return (ce + 0.1) * torch.linspace(1.0, 0.3, H)


class GradCarryingWeight(WeightFn):
    """Weights that (wrongly, for a WeightFn) carry a graph to the model's parameters."""

    needs_ce = True

    def __init__(self, model, extra):
        self.model, self.extra = model, extra

    def weights(self, batch, valid, ce, outputs):
        scale = 1.0 + self.model.unembed.pow(2).mean() + self.extra.sum()
        return (ce + 0.5) * scale


def _naive_step(model, batch, raw_fn, wcfg, n_valid):
    """Naive loss with all heads' full logits in one graph; returns (loss, grads, ce, weights, valid)."""
    targets, valid = naive_targets(batch["input_ids"], batch["loss_mask"], batch["attention_mask"], model.n_heads)
    logits = model(batch["input_ids"], batch["attention_mask"])
    ce = naive_ce_grid(logits, targets)
    raw = raw_fn(batch, valid, ce.detach())
    w = naive_normalize(raw.detach(), valid, wcfg.normalize, wcfg.clip_min, wcfg.clip_max)
    loss = 0.0
    B, T, H = valid.shape
    for b in range(B):
        for t in range(T):
            for k in range(H):
                if valid[b, t, k]:
                    lam = 1.0 if wcfg.head_coefs is None else wcfg.head_coefs[k]
                    loss = loss + w[b, t, k] * ce[b, t, k] * lam
    loss = loss / n_valid
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    return loss.detach(), grads, ce.detach(), w, valid


def _run_step(model, batch, weight_fn, wcfg, n_valid, chunk=16):
    model.zero_grad(set_to_none=True)
    out = forward_backward(model, batch, weight_fn=weight_fn, wcfg=wcfg, n_valid_step=n_valid, chunk_tokens=chunk)
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return out, grads


def _assert_grads_close(got, ref, model):
    names = [n for n, _ in model.named_parameters()]
    assert len(got) == len(ref) == len(names)
    for name, a, b in zip(names, got, ref):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-3, msg=lambda m, name=name: f"{name}: {m}")
    # the test is only meaningful if the gradient is non-trivial everywhere
    assert sum(float(g.abs().sum()) > 0 for g in ref) == len(ref)


WCFGS = {
    "mean": WeightingConfig(),
    "per_position": WeightingConfig(normalize="per_position"),
    "coefs": WeightingConfig(head_coefs=[1.0, 0.5, 0.25]),
    "per_position+coefs+clip": WeightingConfig(
        normalize="per_position", head_coefs=[0.3, 1.0, 2.0], clip_min=0.2, clip_max=1.3
    ),
    "mean+clip": WeightingConfig(clip_min=0.5, clip_max=1.2),
}


@pytest.mark.parametrize("wname", ["uniform", "ce"])
@pytest.mark.parametrize("cfg_name", list(WCFGS))
@pytest.mark.parametrize("head1", [True, False])
def test_forward_backward_matches_naive(wname, cfg_name, head1):
    wcfg = WCFGS[cfg_name]
    model = tiny_model(3, head1=head1, seed=11)
    batch = make_batch(seed=4)
    _, valid = naive_targets(batch["input_ids"], batch["loss_mask"], batch["attention_mask"], 3)
    n_valid = int(valid.sum())
    weight_fn = UniformWeight() if wname == "uniform" else CEWeight()

    def raw_fn(b, v, ce):
        return v.float() if wname == "uniform" else (ce + 0.1) * torch.linspace(1.0, 0.3, 3)

    ref_loss, ref_grads, ref_ce, ref_w, ref_valid = _naive_step(model, batch, raw_fn, wcfg, n_valid)
    out, grads = _run_step(model, batch, weight_fn, wcfg, n_valid)

    assert abs(out.loss - ref_loss.item()) < 1e-5 * max(1.0, abs(ref_loss.item()))
    assert torch.equal(out.valid, ref_valid)
    torch.testing.assert_close(out.ce[ref_valid], ref_ce[ref_valid], atol=1e-5, rtol=1e-5)
    assert torch.all(out.ce[~ref_valid] == 0)
    torch.testing.assert_close(out.weights, ref_w, atol=1e-5, rtol=1e-5)
    if wname == "ce":
        # the weight fn saw the per-(t,k) CE of the current model, 0 at invalid entries
        torch.testing.assert_close(weight_fn.seen_ce[ref_valid], ref_ce[ref_valid], atol=1e-5, rtol=1e-5)
        assert not weight_fn.seen_ce.requires_grad
    _assert_grads_close(grads, ref_grads, model)


def test_forward_backward_uniform_loss_is_mean_ce():
    model = tiny_model(2, seed=2)
    batch = make_batch(seed=1)
    _, valid = naive_targets(batch["input_ids"], batch["loss_mask"], batch["attention_mask"], 2)
    out, _ = _run_step(model, batch, UniformWeight(), WeightingConfig(), int(valid.sum()))
    with torch.no_grad():
        targets, _ = naive_targets(batch["input_ids"], batch["loss_mask"], batch["attention_mask"], 2)
        ref = naive_ce_grid(model(batch["input_ids"], batch["attention_mask"]), targets)[valid].mean()
    assert abs(out.loss - ref.item()) < 1e-5
    assert torch.all(out.weights[valid] == 1) and torch.all(out.weights[~valid] == 0)


def test_forward_backward_weights_carry_no_gradient():
    model = tiny_model(3, seed=6)
    batch = make_batch(seed=8)
    _, valid = naive_targets(batch["input_ids"], batch["loss_mask"], batch["attention_mask"], 3)
    n_valid = int(valid.sum())
    extra = torch.tensor([0.3, 0.7], requires_grad=True)
    fn = GradCarryingWeight(model, extra)

    def raw_fn(b, v, ce):  # the same weights, detached
        with torch.no_grad():
            return (ce + 0.5) * (1.0 + model.unembed.pow(2).mean() + extra.sum())

    ref_loss, ref_grads, *_ = _naive_step(model, batch, raw_fn, WeightingConfig(), n_valid)
    out, grads = _run_step(model, batch, fn, WeightingConfig(), n_valid)
    assert extra.grad is None
    assert not out.weights.requires_grad
    assert abs(out.loss - ref_loss.item()) < 1e-5
    _assert_grads_close(grads, ref_grads, model)


def test_forward_backward_accumulates_over_micro_batches():
    """Two micro-batches with n_valid_step = total valid ⇒ the .grad of one big batch (uniform weights)."""
    model = tiny_model(3, seed=12)
    batch = make_batch(seed=13)
    _, valid = naive_targets(batch["input_ids"], batch["loss_mask"], batch["attention_mask"], 3)
    n_valid = int(valid.sum())
    ref_loss, ref_grads, *_ = _naive_step(model, batch, lambda b, v, ce: v.float(), WeightingConfig(), n_valid)

    model.zero_grad(set_to_none=True)
    total = 0.0
    for rows in (slice(0, 2), slice(2, 4)):
        mb = {k: v[rows] for k, v in batch.items()}
        total += forward_backward(
            model, mb, weight_fn=UniformWeight(), wcfg=WeightingConfig(), n_valid_step=n_valid, chunk_tokens=16
        ).loss
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    assert abs(total - ref_loss.item()) < 1e-5
    _assert_grads_close(grads, ref_grads, model)


def test_forward_backward_mean_normalisation_is_over_the_global_batch():
    """DESIGN §6: with `mean`, the mean of w over the valid entries of the (global) batch is 1. Two
    micro-batches with n_valid_step = total must give the .grad of the whole batch (non-uniform weights)."""
    model = tiny_model(3, seed=16)
    batch = make_batch(seed=17)
    batch["is_correct"] = torch.tensor([1.0, 0.0, 0.0, 1.0])
    _, valid = naive_targets(batch["input_ids"], batch["loss_mask"], batch["attention_mask"], 3)
    n_valid = int(valid.sum())

    class RowWeight(WeightFn):  # records judged correct weigh 3× more
        needs_ce = False

        def weights(self, b, v, ce, outputs):
            return v.float() * (1.0 + 2.0 * b["is_correct"])[:, None, None]

    ref_loss, ref_grads, *_ = _naive_step(model, batch, lambda b, v, ce: RowWeight().weights(b, v, ce, {}),
                                          WeightingConfig(), n_valid)
    model.zero_grad(set_to_none=True)
    micro = [{k: v[rows] for k, v in batch.items()} for rows in (slice(0, 1), slice(1, 4))]
    raws = [raw_step_weights(model, mb, weight_fn=RowWeight(), chunk_tokens=16) for mb in micro]
    weight_total = float(sum((r * naive_targets(mb["input_ids"], mb["loss_mask"], mb["attention_mask"], 3)[1]).sum()
                             for mb, r in zip(micro, raws)))
    total = 0.0
    for mb, raw in zip(micro, raws):
        total += forward_backward(
            model, mb, weight_fn=RowWeight(), wcfg=WeightingConfig(), n_valid_step=n_valid, chunk_tokens=16,
            raw_weights=raw, weight_total_step=weight_total,
        ).loss
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    assert abs(total - ref_loss.item()) < 1e-5 * max(1.0, abs(ref_loss.item())), (total, ref_loss.item())
    _assert_grads_close(grads, ref_grads, model)


def test_forward_backward_head_without_valid_targets():
    """A batch where only head 1 has targets (loss only on the last token): heads 2..H contribute nothing."""
    model = tiny_model(3, seed=14)
    batch = make_batch(seed=15, B=2, T=6, left_pad=False)
    batch["attention_mask"][:] = True
    batch["loss_mask"][:] = False
    batch["loss_mask"][:, 1] = True  # target j=1: only head 1 from t=0
    _, valid = naive_targets(batch["input_ids"], batch["loss_mask"], batch["attention_mask"], 3)
    assert valid[..., 0].any() and not valid[..., 1:].any()
    n_valid = int(valid.sum())
    ref_loss, ref_grads, *_ = _naive_step(model, batch, lambda b, v, ce: v.float(), WeightingConfig(), n_valid)
    out, grads = _run_step(model, batch, UniformWeight(), WeightingConfig(), n_valid)
    assert abs(out.loss - ref_loss.item()) < 1e-5
    for (name, _), a, b in zip(model.named_parameters(), grads, ref_grads):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-3, msg=lambda m, name=name: f"{name}: {m}")
    head_grads = [g for (name, _), g in zip(model.named_parameters(), grads) if name.startswith("heads.")]
    assert head_grads and all(torch.all(g == 0) for g in head_grads)


@pytest.mark.parametrize("chunk", [3, 64])
def test_weighted_linear_ce_shared_gradient_buffer(chunk):
    """With `unembed_grad`, two heads' unembedding gradients add into one buffer; equal to autograd's sum."""
    hidden, unembed, targets = _ce_inputs(n_ignored=0)
    coef = torch.rand(len(targets))
    ref_unembed = unembed.clone().requires_grad_()
    ref_hidden = hidden.clone().requires_grad_()
    naive = (F.cross_entropy(ref_hidden @ ref_unembed.T, targets, reduction="none") * coef).sum()
    (2 * naive).backward()  # two identical "heads"
    buffer = torch.zeros_like(unembed)
    for _ in range(2):
        h = hidden.clone().requires_grad_()
        loss, _ = weighted_linear_ce(h, unembed, targets, coef, chunk_tokens=chunk, unembed_grad=buffer)
        loss.backward()
        torch.testing.assert_close(h.grad, ref_hidden.grad / 2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(buffer, ref_unembed.grad, atol=1e-5, rtol=1e-4)
    h = hidden.clone().requires_grad_()
    loss, _ = weighted_linear_ce(h, unembed, targets, coef, chunk_tokens=chunk, unembed_grad=buffer)
    with pytest.raises(RuntimeError, match="gradient 1"):
        (3 * loss).backward()
