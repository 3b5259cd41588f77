"""Weight normalisation (DESIGN §6) and weight statistics, against explicit loops."""

from __future__ import annotations

import math

import pytest
import torch

from wmtp.weighting.base import normalize_weights, weight_stats

from oracles import naive_normalize


def _inputs(seed, shape=(3, 6, 4), p_valid=0.6):
    g = torch.Generator().manual_seed(seed)
    raw = torch.rand(shape, generator=g) * 3
    valid = torch.rand(shape, generator=g) < p_valid
    return raw, valid


@pytest.mark.parametrize("seed", range(8))
def test_mean_mode_matches_loop(seed):
    raw, valid = _inputs(seed)
    w = normalize_weights(raw, valid, mode="mean")
    torch.testing.assert_close(w, naive_normalize(raw, valid, "mean"), atol=1e-5, rtol=1e-5)
    assert abs(w[valid].mean().item() - 1.0) < 1e-5
    assert torch.all(w[~valid] == 0)


@pytest.mark.parametrize("seed", range(8))
def test_per_position_mode_matches_loop(seed):
    raw, valid = _inputs(seed)
    w = normalize_weights(raw, valid, mode="per_position")
    torch.testing.assert_close(w, naive_normalize(raw, valid, "per_position"), atol=1e-5, rtol=1e-5)
    B, T, H = valid.shape
    for b in range(B):
        for t in range(T):
            n = int(valid[b, t].sum())
            assert abs(float(w[b, t].sum()) - n) < 1e-5
    assert torch.all(w[~valid] == 0)


@pytest.mark.parametrize("mode", ["mean", "per_position"])
@pytest.mark.parametrize("scale", [1.0, 0.01, 7.0])
def test_uniform_gives_ones(mode, scale):
    _, valid = _inputs(3)
    w = normalize_weights(torch.full(valid.shape, scale), valid, mode=mode)
    assert torch.allclose(w[valid], torch.ones(int(valid.sum())), atol=1e-6)
    assert torch.all(w[~valid] == 0)


@pytest.mark.parametrize("mode", ["mean", "per_position"])
def test_invalid_entries_ignored(mode):
    raw, valid = _inputs(4)
    noisy = raw.clone()
    noisy[~valid] = torch.tensor([1e6, -5.0, float("nan"), float("inf")]).repeat(int((~valid).sum()) // 4 + 1)[
        : int((~valid).sum())
    ]
    torch.testing.assert_close(normalize_weights(noisy, valid, mode=mode), normalize_weights(raw, valid, mode=mode))


@pytest.mark.parametrize("mode", ["mean", "per_position"])
@pytest.mark.parametrize("clip", [(0.5, None), (None, 1.2), (0.4, 1.5)])
def test_clipping_after_normalisation(mode, clip):
    raw, valid = _inputs(5)
    raw[valid.nonzero()[0].tolist()] = 0.0  # one valid zero weight: clip_min lifts it
    w = normalize_weights(raw, valid, mode=mode, clip_min=clip[0], clip_max=clip[1])
    torch.testing.assert_close(w, naive_normalize(raw, valid, mode, *clip), atol=1e-5, rtol=1e-5)
    if clip[0] is not None:
        assert w[valid].min() >= clip[0] - 1e-7
    if clip[1] is not None:
        assert w[valid].max() <= clip[1] + 1e-7
    assert torch.all(w[~valid] == 0)


def test_all_zero_stays_zero():
    _, valid = _inputs(6)
    for mode in ("mean", "per_position"):
        w = normalize_weights(torch.zeros(valid.shape), valid, mode=mode)
        assert torch.all(w == 0) and torch.isfinite(w).all()


def test_per_position_zero_row_stays_zero_others_normalised():
    valid = torch.ones(1, 2, 3, dtype=torch.bool)
    raw = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]])
    w = normalize_weights(raw, valid, mode="per_position")
    torch.testing.assert_close(w, torch.tensor([[[0.0, 0.0, 0.0], [0.5, 1.0, 1.5]]]))


def test_negative_weights_raise():
    raw, valid = _inputs(7)
    raw[valid.nonzero()[0].tolist()] = -0.1
    for mode in ("mean", "per_position"):
        with pytest.raises(ValueError):
            normalize_weights(raw, valid, mode=mode)


def test_unknown_mode_raises():
    raw, valid = _inputs(8)
    with pytest.raises(ValueError):
        normalize_weights(raw, valid, mode="softmax")


@pytest.mark.parametrize("mode", ["mean", "per_position"])
def test_output_detached(mode):
    raw, valid = _inputs(9)
    raw = raw.requires_grad_()
    w = normalize_weights(raw * 2, valid, mode=mode, clip_max=5.0)
    assert not w.requires_grad
    assert w.grad_fn is None
    assert w.dtype == torch.float32


def test_hand_example_mean():
    valid = torch.tensor([[[True, True], [True, False]]])
    raw = torch.tensor([[[1.0, 2.0], [3.0, 100.0]]])
    w = normalize_weights(raw, valid, mode="mean")  # n_valid 3, Σ 6 ⇒ ×0.5
    torch.testing.assert_close(w, torch.tensor([[[0.5, 1.0], [1.5, 0.0]]]))


def test_weight_stats_hand_example():
    weights = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 100.0, 7.0]]])
    valid = torch.tensor([[[True, True, True], [True, False, False]]])
    s = weight_stats(weights, valid)
    vals = [1.0, 2.0, 3.0, 0.0]
    mean = sum(vals) / 4
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / 4)
    p = [v / sum(vals) for v in vals]
    entropy = -sum(q * math.log(q) for q in p if q > 0)
    assert s["w_mean"] == pytest.approx(mean)
    assert s["w_std"] == pytest.approx(std)
    assert s["w_max"] == pytest.approx(3.0)
    assert s["w_entropy"] == pytest.approx(entropy, rel=1e-5)
    assert s["w_frac_zero"] == pytest.approx(0.25)


def test_weight_stats_uniform_entropy_is_log_n():
    valid = torch.rand(2, 5, 3, generator=torch.Generator().manual_seed(0)) < 0.7
    s = weight_stats(valid.float(), valid)
    n = int(valid.sum())
    assert s["w_mean"] == pytest.approx(1.0)
    assert s["w_std"] == pytest.approx(0.0, abs=1e-7)
    assert s["w_entropy"] == pytest.approx(math.log(n), rel=1e-5)
    assert s["w_frac_zero"] == 0.0


def test_weight_stats_empty():
    assert weight_stats(torch.ones(1, 3, 2), torch.zeros(1, 3, 2, dtype=torch.bool)) == {}
