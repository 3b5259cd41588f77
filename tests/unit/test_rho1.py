"""Rho-1 weights (DESIGN §7) against a naive per-element oracle, alignment to the reference, the WeightFn."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from wmtp.data.collate import EncodedRecord, collate
from wmtp.model.loss import mtp_targets
from wmtp.weighting.base import normalize_weights
from wmtp.weighting.controls import control_generator, shuffled_weights
from wmtp.weighting.rho1 import Rho1Config, Rho1Weight, rho1_weights


def oracle(ce, ref_ce, valid, *, excess, temperature, min_ce_diff, transform, topk_percent):
    """Explicit loops over b, t, k: head k+1 (index k) at position t predicts token t+k+1."""
    B, T, H = ce.shape
    x = {}
    for b, t, k in itertools.product(range(B), range(T), range(H)):
        if valid[b, t, k]:
            e = float(ce[b, t, k]) - float(ref_ce[b, t + k + 1])
            x[(b, t, k)] = abs(e) if excess == "abs" else e
    n_valid = len(x)
    cand = {e: v for e, v in x.items() if abs(v) >= min_ce_diff}
    w = torch.zeros(B, T, H, dtype=torch.float64)
    if transform == "softmax_heads":
        for b, t in itertools.product(range(B), range(T)):
            group = {e: v for e, v in cand.items() if e[:2] == (b, t)}
            z = sum(math.exp(v / temperature) for v in group.values())
            for e, v in group.items():  # scaled by the number of candidates at (b, t)
                w[e] = len(group) * math.exp(v / temperature) / z
    elif transform == "softmax_batch":
        z = sum(math.exp(v / temperature) for v in cand.values())
        for e, v in cand.items():
            w[e] = n_valid * math.exp(v / temperature) / z
    else:
        count = round(topk_percent / 100 * n_valid)
        for e in sorted(cand, key=lambda e: (-cand[e], e))[:count]:  # ties: the earlier (b,t,k) first
            w[e] = 1.0
    return w.float()


def make_inputs(seed, B=3, T=7, H=3, ties=False):
    g = torch.Generator().manual_seed(seed)
    ce = torch.rand(B, T, H, generator=g) * 4
    ref_ce = torch.rand(B, T, generator=g) * 4
    if ties:  # multiples of 0.5 are exact in float32: many exactly equal excesses
        ce, ref_ce = (ce * 2).round() / 2, (ref_ce * 2).round() / 2
    ref_ce[:, 0] = 0.0
    loss_mask = torch.rand(B, T, generator=g) < 0.7
    attention_mask = torch.ones(B, T, dtype=torch.bool)
    attention_mask[0, T - 2 :] = False  # a padded row
    loss_mask &= attention_mask
    valid = mtp_targets(torch.zeros(B, T, dtype=torch.long), loss_mask, attention_mask, H)[1]
    ce = torch.where(valid, ce, 0.0)
    return ce, ref_ce, valid


OPTIONS = list(
    itertools.product(
        ["signed", "abs"],
        ["softmax_heads", "softmax_batch", "topk"],
        [0.0, 0.75],  # min_ce_diff off / on
        [0.5, 1.0, 2.0],  # temperature
    )
)


@pytest.mark.parametrize("excess,transform,min_ce_diff,temperature", OPTIONS)
@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_matches_oracle_for_every_option(excess, transform, min_ce_diff, temperature, seed, ties):
    ce, ref_ce, valid = make_inputs(seed, ties=ties)
    for topk_percent in ([60.0, 33.0, 100.0] if transform == "topk" else [60.0]):
        kw = dict(excess=excess, temperature=temperature, min_ce_diff=min_ce_diff, transform=transform,
                  topk_percent=topk_percent)  # fmt: skip
        w = rho1_weights(ce, ref_ce, valid, **kw)
        torch.testing.assert_close(w, oracle(ce, ref_ce, valid, **kw), atol=1e-5, rtol=1e-5)
        assert w.dtype == torch.float32 and w.shape == ce.shape
        assert torch.all(w[~valid] == 0) and torch.all(w >= 0)


def test_hand_example():
    # B=1, T=4, H=2, everything valid except what runs past the end (t+k ≥ T)
    ce = torch.tensor([[[3.0, 1.0], [2.0, 2.5], [1.0, 9.0], [7.0, 7.0]]])
    ref_ce = torch.tensor([[0.0, 1.0, 2.0, 0.5]])
    valid = torch.tensor([[[True, True], [True, True], [True, False], [False, False]]])
    # excess (signed): t=0: 3−1=2, 1−2=−1; t=1: 2−2=0, 2.5−0.5=2; t=2: 1−0.5=0.5
    kw = dict(excess="signed", temperature=1.0, min_ce_diff=0.0, topk_percent=60.0)
    e = math.e
    heads = rho1_weights(ce, ref_ce, valid, transform="softmax_heads", **kw)
    z0, z1 = e**2 + e**-1, 1 + e**2  # two candidates at t=0 and t=1 (Σ_k w = 2), one at t=2
    expected = [[2 * e**2 / z0, 2 * e**-1 / z0], [2 / z1, 2 * e**2 / z1], [1.0, 0.0], [0.0, 0.0]]
    torch.testing.assert_close(heads, torch.tensor([expected]))
    # min_ce_diff 0.6 drops excess 0 (t=1,k=1) and 0.5 (t=2): weight exactly 0, not exp(0)/Z
    dropped = rho1_weights(ce, ref_ce, valid, transform="softmax_heads", **{**kw, "min_ce_diff": 0.6})
    torch.testing.assert_close(dropped[0, 1:], torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]))
    # topk 60% of 5 valid = 3: excess 2 (t0,k1), 2 (t1,k2) and 0.5 (t2,k1); ties → earlier first
    top = rho1_weights(ce, ref_ce, valid, transform="topk", **kw)
    torch.testing.assert_close(top, torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]]))
    # abs: |−1| = 1 beats 0.5
    top_abs = rho1_weights(ce, ref_ce, valid, transform="topk", **{**kw, "excess": "abs"})
    torch.testing.assert_close(top_abs, torch.tensor([[[1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]]))
    batch = rho1_weights(ce, ref_ce, valid, transform="softmax_batch", **kw)
    assert batch[valid].mean().item() == pytest.approx(1.0)
    z = 2 * e**2 + e**-1 + 1 + e**0.5
    assert batch[0, 0, 0].item() == pytest.approx(5 * e**2 / z)


def equal_excess_inputs(H=4, T=10, B=2):
    """Every valid entry has excess 1.5 (ce 2, ref_ce 0.5); the last completion positions have H, H−1, …, 1 valid
    heads (t + k runs past the record), and row 1 is shorter (padded)."""
    attention_mask = torch.ones(B, T, dtype=torch.bool)
    attention_mask[1, T - 3 :] = False
    loss_mask = attention_mask.clone()
    loss_mask[:, :2] = False  # a two-token prompt
    valid = mtp_targets(torch.zeros(B, T, dtype=torch.long), loss_mask, attention_mask, H)[1]
    ce = torch.where(valid, 2.0, 0.0)
    return ce, torch.full((B, T), 0.5), valid


@pytest.mark.parametrize("excess", ["signed", "abs"])
@pytest.mark.parametrize("transform", ["softmax_heads", "softmax_batch", "topk"])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_equal_excess_gives_uniform_weights_after_mean_normalisation(excess, transform, temperature):
    H = 4
    ce, ref_ce, valid = equal_excess_inputs(H)
    counts = valid.sum(-1)[valid.any(-1)]
    assert set(counts.tolist()) == set(range(1, H + 1))  # positions with 1, 2, …, H valid heads
    raw = rho1_weights(ce, ref_ce, valid, excess=excess, temperature=temperature, min_ce_diff=0.0,
                       transform=transform, topk_percent=100.0)
    w = normalize_weights(raw, valid, mode="mean")
    assert torch.all(w[valid] == 1.0) and torch.all(w[~valid] == 0)


def test_equal_excess_with_min_ce_diff_zeros_keeps_the_candidates_equal():
    """Entries below min_ce_diff get 0 and do not pass their share to the other heads of their position: after
    `mean` normalisation every candidate has the same weight, n_valid / n_candidates."""
    ce, ref_ce, valid = equal_excess_inputs(4)
    candidates = valid.clone()
    candidates[..., 1] = False  # head 2 has excess 0 (ce = ref_ce) everywhere, below min_ce_diff
    candidates[0, 3, 2:] = False  # and at one position heads 3 and 4 too: one candidate left there
    ce = torch.where(valid & ~candidates, 0.5, ce)  # excess 0 there, 1.5 on the candidates
    for transform in ("softmax_heads", "softmax_batch", "topk"):
        raw = rho1_weights(ce, ref_ce, valid, excess="abs", temperature=1.0, min_ce_diff=0.1,
                           transform=transform, topk_percent=100.0)
        assert torch.all(raw[valid & ~candidates] == 0), transform
        w = normalize_weights(raw, valid, mode="mean")
        n_valid, n_cand = int(valid.sum()), int(candidates.sum())
        torch.testing.assert_close(w[candidates], torch.full((n_cand,), n_valid / n_cand))
    heads = rho1_weights(ce, ref_ce, valid, excess="abs", temperature=1.0, min_ce_diff=0.1,
                         transform="softmax_heads", topk_percent=100.0)
    torch.testing.assert_close(heads.sum(-1), candidates.sum(-1).float())  # Σ_k w[t,k] = candidates at t


def test_shuffled_control_of_equal_excess_is_uniform_too():
    """With no signal (equal excess) rho1's weights carry no head-count pattern: shuffling them changes nothing."""
    ce, ref_ce, valid = equal_excess_inputs()
    raw = rho1_weights(ce, ref_ce, valid, excess="abs", temperature=1.0, min_ce_diff=0.0,
                       transform="softmax_heads", topk_percent=100.0)
    shuffled = shuffled_weights(raw, valid, control_generator(0, 0, 0))
    w = normalize_weights(shuffled, valid, mode="mean")
    assert torch.equal(w, normalize_weights(raw, valid, mode="mean")) and torch.all(w[valid] == 1.0)


def test_topk_ties_are_broken_by_index_and_count_rounds_half_to_even():
    ce = torch.ones(1, 6, 1)
    ref_ce = torch.zeros(1, 6)
    valid = torch.ones(1, 6, 1, dtype=torch.bool)
    valid[0, 5] = False  # t+1 = 6 ≥ T
    kw = dict(excess="signed", temperature=1.0, min_ce_diff=0.0, transform="topk")
    w = rho1_weights(ce, ref_ce, valid, topk_percent=50.0, **kw)  # 50% of 5 = 2.5 → 2 (half to even)
    assert w[0, :, 0].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    w = rho1_weights(ce, ref_ce, valid, topk_percent=70.0, **kw)  # 3.5 → 4
    assert w[0, :, 0].tolist() == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]


def test_topk_never_selects_entries_below_min_ce_diff():
    ce = torch.tensor([[[1.0], [0.1], [0.2], [0.0]]])
    valid = torch.tensor([[[True], [True], [True], [False]]])
    w = rho1_weights(ce, torch.zeros(1, 4), valid, excess="abs", temperature=1.0, min_ce_diff=0.5,
                     transform="topk", topk_percent=100.0)  # fmt: skip
    assert w[0, :, 0].tolist() == [1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("transform", ["softmax_heads", "softmax_batch", "topk"])
@pytest.mark.parametrize("excess", ["signed", "abs"])
def test_alignment_perfect_reference_on_token_j(transform, excess):
    """ref_ce[j]=0 and large elsewhere: the entries with high excess are exactly those with t+k=j."""
    B, T, H = 2, 9, 3
    valid = mtp_targets(torch.zeros(B, T, dtype=torch.long), torch.ones(B, T), torch.ones(B, T), H)[1]
    ce = torch.where(valid, torch.full((B, T, H), 5.0), 0.0)
    for j in range(1, T):
        ref_ce = torch.full((B, T), 9.0 if excess == "signed" else 5.0)
        ref_ce[:, j] = 0.0  # excess 5 at t+k=j; −4 (signed) or 0 (abs) elsewhere
        n_hit = int(sum(valid[0, j - k, k - 1] for k in range(1, H + 1) if j - k >= 0))
        p = 100.0 * n_hit * B / int(valid.sum())
        w = rho1_weights(ce, ref_ce, valid, excess=excess, temperature=0.5, min_ce_diff=0.0,
                         transform=transform, topk_percent=p)  # fmt: skip
        hit = torch.zeros(B, T, H, dtype=torch.bool)
        for t, k in itertools.product(range(T), range(1, H + 1)):
            hit[:, t, k - 1] = (t + k == j) and bool(valid[0, t, k - 1])
        if transform == "softmax_heads":
            positions = hit.any(-1)  # the positions t that have a head aimed at j
            assert torch.all(w[hit] > 0.99) and torch.all(w[positions[..., None] & ~hit & valid] < 0.01)
        else:
            assert torch.equal(w > 0.5 * w.max(), hit), j


def test_alignment_through_collate_and_the_weight_fn():
    """A record whose ref_ce is perfect on one completion token, left-padded in a batch: rho1 puts its
    weight on (t,k) with t+k = that token's column."""
    short = EncodedRecord("s", [1, 10, 11, 12, 13, 2], n_prompt=2, is_correct=True, ref_ce=[0, 9, 9, 0, 9, 9])
    long = EncodedRecord("l", [1, 10, 11, 12, 13, 14, 15, 2], n_prompt=2, is_correct=True, ref_ce=[0.0] + [9.0] * 7)
    batch = collate([short, long], pad_id=0, padding_side="left")
    assert batch["ref_ce"][0].tolist() == [0, 0, 0, 9, 9, 0, 9, 9]  # two pads, then the record's values
    H = 2
    valid = mtp_targets(batch["input_ids"], batch["loss_mask"], batch["attention_mask"], H)[1]
    ce = torch.where(valid, torch.full(valid.shape, 5.0), 0.0)
    fn = Rho1Weight(Rho1Config(excess="signed", transform="topk", topk_percent=100 * 2 / int(valid.sum())))
    w = fn.weights(batch, valid, ce, {})
    j = 2 + 3  # token 3 of the short record, in column 5 after two pads
    assert w[0].nonzero().tolist() == [[j - 2, 1], [j - 1, 0]] and w[1].sum() == 0


def test_weight_fn_stats_and_missing_reference():
    ce, ref_ce, valid = make_inputs(3)
    fn = Rho1Weight(Rho1Config(excess="signed", min_ce_diff=0.5))
    fn.begin_step(0)
    fn.weights({"ref_ce": ref_ce}, valid, ce, {})
    fn.weights({"ref_ce": ref_ce}, valid, ce, {})  # a second micro-batch of the same step: same means
    stats = fn.stats()
    for k in range(3):
        x = [float(ce[b, t, k]) - float(ref_ce[b, t + k + 1]) for b, t in itertools.product(range(3), range(7))
             if valid[b, t, k]]  # fmt: skip
        assert stats[f"excess_h{k + 1}"] == pytest.approx(sum(x) / len(x), rel=1e-5)
    below = [e for e in itertools.product(range(3), range(7), range(3)) if valid[e]
             and abs(float(ce[e]) - float(ref_ce[e[0], e[1] + e[2] + 1])) < 0.5]  # fmt: skip
    assert stats["excess_frac_below_min"] == pytest.approx(len(below) / int(valid.sum()))
    fn.begin_step(1)
    assert fn.stats() == {}
    with pytest.raises(RuntimeError, match="score-ref"):
        fn.weights({}, valid, ce, {})


def test_validation_weights_equal_weights_and_record_no_statistics():
    ce, ref_ce, valid = make_inputs(3)
    fn = Rho1Weight(Rho1Config(excess="signed", min_ce_diff=0.5))
    fn.begin_step(0)
    w = fn.validation_weights({"ref_ce": ref_ce}, valid, ce, {})
    assert fn.stats() == {}
    torch.testing.assert_close(w, fn.weights({"ref_ce": ref_ce}, valid, ce, {}), rtol=0, atol=0)
    before = fn.stats()
    fn.validation_weights({"ref_ce": ref_ce + 1.0}, valid, ce, {})
    assert fn.stats() == before


def test_on_the_fly_scorer_is_used_when_the_batch_has_no_ref_ce():
    ce, ref_ce, valid = make_inputs(4)
    calls = []

    def scorer(input_ids, attention_mask):
        calls.append(input_ids.shape)
        return ref_ce

    cfg = Rho1Config(transform="softmax_batch")
    w = Rho1Weight(cfg, scorer=scorer).weights({"input_ids": torch.zeros(3, 7), "attention_mask": None}, valid, ce, {})
    assert calls == [(3, 7)]
    torch.testing.assert_close(w, Rho1Weight(cfg).weights({"ref_ce": ref_ce}, valid, ce, {}))


def test_output_is_detached_and_nan_at_invalid_entries_is_ignored():
    ce, ref_ce, valid = make_inputs(5)
    noisy = torch.where(valid, ce, float("nan")).requires_grad_()
    for transform in ("softmax_heads", "softmax_batch", "topk"):
        kw = dict(excess="abs", temperature=1.0, min_ce_diff=0.1, transform=transform, topk_percent=60.0)
        w = rho1_weights(noisy, ref_ce, valid, **kw)
        assert not w.requires_grad and torch.isfinite(w).all()
        torch.testing.assert_close(w, rho1_weights(ce, ref_ce, valid, **kw))


@pytest.mark.parametrize(
    "bad", [{"transform": "top"}, {"excess": "sq"}, {"temperature": 0.0}, {"topk_percent": 0.0}, {"min_ce_diff": -1}]
)
def test_bad_options_raise(bad):
    ce, ref_ce, valid = make_inputs(6)
    kw = dict(excess="abs", temperature=1.0, min_ce_diff=0.0, transform="topk", topk_percent=60.0)
    with pytest.raises(ValueError):
        rho1_weights(ce, ref_ce, valid, **{**kw, **bad})
