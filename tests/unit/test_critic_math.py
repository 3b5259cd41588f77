"""Critic math (DESIGN §7, issue 5): GAE, terminal rewards, k-step TD, AUC, explained variance vs loop oracles.

Conventions: values[b,i] = V(s_i), the value of the prefix x_≤i; mask[b] marks one contiguous run of
completion tokens (possibly empty) that never starts at position 0; V after the last completion token is 0.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from wmtp.weighting.critic_math import (
    auc,
    auc_bootstrap_ci,
    explained_variance,
    gae,
    kstep_td,
    running_max,
    terminal_rewards,
)

GAMMAS = [1.0, 0.9, 0.5]
LAMS = [0.0, 0.5, 0.95, 1.0]


def spans_mask(T: int, spans: list[tuple[int, int]]) -> torch.Tensor:
    """Bool[B,T]: row b is True on [start, end) of spans[b]; start == end gives an all-false row."""
    mask = torch.zeros(len(spans), T, dtype=torch.bool)
    for b, (start, end) in enumerate(spans):
        mask[b, start:end] = True
    return mask


# Padding on both sides, right padding only, left padding only (runs to the end), empty row, length-1 row.
EDGE_SPANS = [(2, 6), (1, 4), (5, 9), (3, 3), (4, 5), (8, 9)]


def random_batch(seed: int, B: int = 6, T: int = 9, reward_outside: bool = False):
    """Float32 rewards and values, and a mask with a random contiguous run per row plus the EDGE_SPANS rows."""
    g = torch.Generator().manual_seed(seed)
    spans = list(EDGE_SPANS)
    for _ in range(B):
        start = int(torch.randint(1, T, (1,), generator=g))
        spans.append((start, start + int(torch.randint(0, T - start + 1, (1,), generator=g))))
    mask = spans_mask(T, spans)
    values = torch.randn(len(spans), T, generator=g)
    rewards = torch.randn(len(spans), T, generator=g)
    if not reward_outside:
        rewards = torch.where(mask, rewards, 0.0)
    return rewards, values, mask


def last_index(row: torch.Tensor) -> int | None:
    idx = [j for j in range(row.shape[0]) if row[j]]
    return idx[-1] if idx else None


def oracle_deltas(rewards, values, mask, gamma) -> dict[tuple[int, int], float]:
    """δ_j = r_j + γ·V(s_j)·[j not last] − V(s_{j−1}) for every completion token (b, j)."""
    out = {}
    for b in range(mask.shape[0]):
        last = last_index(mask[b])
        for j in range(mask.shape[1]):
            if mask[b, j]:
                boot = gamma * float(values[b, j]) if j != last else 0.0
                out[(b, j)] = float(rewards[b, j]) + boot - float(values[b, j - 1])
    return out


def oracle_gae(rewards, values, mask, gamma, lam):
    """A_j = Σ_{l≥0} (γλ)^l δ_{j+l} over the rest of the completion; returns_j = A_j + V(s_{j−1})."""
    delta = oracle_deltas(rewards, values, mask, gamma)
    adv = torch.zeros(mask.shape, dtype=torch.float64)
    ret = torch.zeros(mask.shape, dtype=torch.float64)
    for b, j in delta:
        last = last_index(mask[b])
        adv[b, j] = sum((gamma * lam) ** l * delta[(b, j + l)] for l in range(last - j + 1))
        ret[b, j] = adv[b, j] + float(values[b, j - 1])
    return adv, ret


def close(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert got.shape == expected.shape
    torch.testing.assert_close(got.double(), expected.double(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("gamma, lam", list(itertools.product(GAMMAS, LAMS)))
@pytest.mark.parametrize("seed", [0, 1])
def test_gae_matches_loop_oracle(gamma, lam, seed):
    rewards, values, mask = random_batch(seed)
    adv, ret = gae(rewards, values, mask, gamma, lam)
    exp_adv, exp_ret = oracle_gae(rewards, values, mask, gamma, lam)
    close(adv, exp_adv)
    close(ret, exp_ret)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_gae_lambda0_is_one_step_td(gamma):
    rewards, values, mask = random_batch(2)
    adv, _ = gae(rewards, values, mask, gamma, 0.0)
    expected = torch.zeros(mask.shape, dtype=torch.float64)
    for (b, j), d in oracle_deltas(rewards, values, mask, gamma).items():
        expected[b, j] = d
    close(adv, expected)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_gae_lambda1_returns_are_monte_carlo(gamma):
    """λ=1 telescopes: returns_j = G_j = Σ_{l≥0} γ^l r_{j+l}, A_j = G_j − V(s_{j−1})."""
    rewards, values, mask = random_batch(3)
    adv, ret = gae(rewards, values, mask, gamma, 1.0)
    G = torch.zeros(mask.shape, dtype=torch.float64)
    for b, j in itertools.product(range(mask.shape[0]), range(mask.shape[1])):
        if mask[b, j]:
            last = last_index(mask[b])
            G[b, j] = sum(gamma**l * float(rewards[b, j + l]) for l in range(last - j + 1))
    close(ret, G)
    close(adv, torch.where(mask, G - torch.roll(values, 1, dims=1).double(), 0.0))


def test_gae_zero_outside_mask_and_ignores_rewards_there():
    """Rewards outside the completion never enter δ; advantages and returns are 0 off the mask."""
    rewards, values, mask = random_batch(4, reward_outside=True)
    adv, ret = gae(rewards, values, mask, 0.9, 0.95)
    assert torch.all(adv[~mask] == 0) and torch.all(ret[~mask] == 0)
    exp_adv, exp_ret = oracle_gae(torch.where(mask, rewards, 0.0), values, mask, 0.9, 0.95)
    close(adv, exp_adv)
    close(ret, exp_ret)


def test_gae_empty_and_length1_rows():
    values = torch.tensor([[0.3, -0.7, 0.2, 0.9], [0.5, 0.4, -0.1, 0.8]])
    rewards = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]])
    mask = spans_mask(4, [(2, 2), (2, 3)])
    adv, ret = gae(rewards, values, mask, 0.9, 0.95)
    # Row 0 has no completion; row 1's only token is last: δ = r_2 − V(s_1), return = r_2.
    close(adv, torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0 - 0.4, 0.0]]))
    close(ret, torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]]))


def oracle_terminal(is_correct, mask, reward_correct, reward_incorrect):
    out = torch.zeros(mask.shape, dtype=torch.float64)
    for b in range(mask.shape[0]):
        last = last_index(mask[b])
        if last is not None:
            out[b, last] = reward_correct if bool(is_correct[b]) else reward_incorrect
    return out


@pytest.mark.parametrize("reward_incorrect", [0.0, -1.0])
@pytest.mark.parametrize("as_bool", [True, False])
def test_terminal_rewards_on_last_completion_token(reward_incorrect, as_bool):
    mask = spans_mask(9, EDGE_SPANS)
    is_correct = torch.tensor([True, False, True, False, False, True])
    is_correct = is_correct if as_bool else is_correct.float()
    got = terminal_rewards(is_correct, mask, reward_correct=1.0, reward_incorrect=reward_incorrect)
    expected = oracle_terminal(is_correct, mask, 1.0, reward_incorrect)
    assert got.is_floating_point()
    close(got, expected)
    assert got[1, 3] == reward_incorrect and got[2, 8] == 1.0 and got[0, 5] == 1.0  # right / left / both


def test_terminal_rewards_defaults_and_empty_row():
    mask = spans_mask(5, [(1, 3), (2, 2), (4, 5)])
    got = terminal_rewards(torch.tensor([1.0, 1.0, 0.0]), mask)
    close(got, torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0], [0.0] * 5, [0.0] * 5]))


def oracle_kstep(rewards, values, mask, gamma, H):
    """Triple loop: head k at t, target j = t+k a completion token; the window starts at s = max(t, c−1), c the
    first completion token (a window reaching into the prompt starts at the last prompt state)."""
    B, T = mask.shape
    out = torch.zeros(B, T, H, dtype=torch.float64)
    for b, t, k in itertools.product(range(B), range(T), range(1, H + 1)):
        j = t + k
        if j >= T or not mask[b, j]:
            continue
        first = next(i for i in range(T) if mask[b, i])
        s = max(t, first - 1)
        disc = sum(gamma ** (i - s - 1) * float(rewards[b, i]) for i in range(s + 1, j + 1))
        boot = gamma ** (j - s) * float(values[b, j]) if j != last_index(mask[b]) else 0.0
        out[b, t, k - 1] = disc + boot - float(values[b, s])
    return out


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("H", [1, 3, 4])
def test_kstep_td_matches_loop_oracle(gamma, H):
    rewards, values, mask = random_batch(5)
    got = kstep_td(rewards, values, mask, gamma, H)
    close(got, oracle_kstep(rewards, values, mask, gamma, H))


@pytest.mark.parametrize("gamma", GAMMAS)
def test_kstep_td_head1_is_one_step_delta(gamma):
    """k=1 at position t is δ_{t+1}, including t = the last prompt token."""
    rewards, values, mask = random_batch(6)
    got = kstep_td(rewards, values, mask, gamma, 2)
    expected = torch.zeros(mask.shape, dtype=torch.float64)
    for (b, j), d in oracle_deltas(rewards, values, mask, gamma).items():
        expected[b, j - 1] = d
    close(got[..., 0], expected)


def test_kstep_td_hand_example():
    """T=5, completion at 2..4 (γ=0.5): δ[1,2] = r2 + 0.5·r3 + 0.25·V3 − V1; δ[1,3] = r2 + 0.5·r3 + 0.25·r4 − V1.
    Head k's first k−1 targets start their window at the last prompt state s_1: δ[0,2] = δ[1,1] = r2 + 0.5·V2 − V1,
    δ[0,3] = δ[1,2]; head 1 at t=0 predicts a prompt token (0)."""
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    rewards = torch.tensor([[0.0, 0.0, 1.0, 2.0, 4.0]])
    got = kstep_td(rewards, values, spans_mask(5, [(2, 5)]), 0.5, 3)
    assert got[0, 1, 1] == pytest.approx(1.0 + 1.0 + 1.0 - 2.0)
    assert got[0, 1, 2] == pytest.approx(1.0 + 1.0 + 1.0 - 2.0)
    assert got[0, 3, 0] == pytest.approx(4.0 - 4.0)  # last token: no bootstrap
    assert got[0, 0, 1] == pytest.approx(1.0 + 1.5 - 2.0) and got[0, 0, 1] == got[0, 1, 0]
    assert got[0, 0, 2] == got[0, 1, 1]
    assert got[0, 0, 0] == 0 and torch.all(got[0, 4] == 0) and got[0, 2, 2] == 0


def test_kstep_td_counts_every_target_the_loss_counts():
    """Every (t,k) whose target t+k is a completion token (a valid MTP entry, counted by the normaliser) gets the
    error of a window that starts inside the completion or at its last prompt state; no other entry is non-zero."""
    rewards, values, mask = random_batch(7)
    H = 4
    got = kstep_td(rewards, values, mask, 1.0, H)
    targets = torch.stack([torch.roll(mask, -k, dims=1) for k in range(1, H + 1)], dim=-1)
    for k in range(1, H + 1):
        targets[:, mask.shape[1] - k :, k - 1] = False
    assert torch.all(got[~targets] == 0)
    assert torch.all(got[targets] != 0)  # random values: no error is exactly 0


def oracle_auc(scores, labels) -> float:
    pos = [float(s) for s, y in zip(scores, labels) if y]
    neg = [float(s) for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("label_dtype", [torch.bool, torch.float32])
def test_auc_matches_pair_loop(ties, seed, label_dtype):
    """Labels as Bool or as Float 0/1 (is_correct is Float[B] in a batch, DESIGN §3)."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(40, generator=g)
    if ties:
        scores = (scores * 2).round() / 2
    labels = torch.rand(40, generator=g) < 0.4
    assert auc(scores, labels.to(label_dtype)) == pytest.approx(oracle_auc(scores, labels), abs=1e-9)


def test_auc_known_values():
    labels = torch.tensor([False, False, True, True])
    assert auc(torch.tensor([0.1, 0.2, 0.3, 0.4]), labels) == pytest.approx(1.0)
    assert auc(torch.tensor([0.4, 0.3, 0.2, 0.1]), labels) == pytest.approx(0.0)
    assert auc(torch.zeros(4), labels) == pytest.approx(0.5)


@pytest.mark.parametrize("labels", [[True, True, True], [False, False, False]])
def test_auc_one_class_raises(labels):
    with pytest.raises(ValueError):
        auc(torch.tensor([0.1, 0.5, 0.3]), torch.tensor(labels))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_explained_variance_matches_numpy(seed):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(50, generator=g)
    pred = target + 0.7 * torch.randn(50, generator=g)
    t, p = target.double().numpy(), pred.double().numpy()
    expected = 1.0 - np.var(t - p) / np.var(t)
    assert explained_variance(pred, target) == pytest.approx(expected, abs=1e-5)


def test_explained_variance_special_cases():
    target = torch.tensor([0.5, -1.0, 2.0, 0.25, 3.0])
    assert explained_variance(target.clone(), target) == pytest.approx(1.0, abs=1e-6)
    assert explained_variance(target + 4.0, target) == pytest.approx(1.0, abs=1e-6)  # a bias is not penalised
    assert explained_variance(torch.full((5,), float(target.mean())), target) == pytest.approx(0.0, abs=1e-6)


def scored_records(n: int, seed: int, shift: float = 0.5):
    g = torch.Generator().manual_seed(seed)
    labels = torch.rand(n, generator=g) < 0.4
    return torch.randn(n, generator=g) + shift * labels, labels


def test_auc_bootstrap_ci_is_the_percentile_interval_of_within_class_resamples():
    """Against a loop: the same draws (positives then negatives, one generator), AUC of each resample by pairs."""
    scores, labels = scored_records(40, seed=0)
    scores = torch.round(scores * 4) / 4  # ties
    low, high = auc_bootstrap_ci(scores, labels, n_resamples=60, level=0.9, seed=3)
    pos, neg = scores[labels], scores[~labels]
    g = torch.Generator().manual_seed(3)
    p_idx = torch.randint(len(pos), (60, len(pos)), generator=g)
    n_idx = torch.randint(len(neg), (60, len(neg)), generator=g)
    aucs = []
    for r in range(60):
        ps, ns = pos[p_idx[r]], neg[n_idx[r]]
        aucs.append(oracle_auc(torch.cat([ps, ns]), [True] * len(ps) + [False] * len(ns)))
    expected = np.quantile(np.array(aucs), [0.05, 0.95])
    assert (low, high) == pytest.approx(tuple(expected), abs=1e-9)


def test_auc_bootstrap_ci_contains_the_estimate_and_narrows_with_n():
    widths = []
    for n in (60, 240, 960):
        scores, labels = scored_records(n, seed=n)
        low, high = auc_bootstrap_ci(scores, labels)
        assert low < auc(scores, labels) < high
        assert auc_bootstrap_ci(scores, labels) == (low, high)  # fixed seed: reproducible
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] == pytest.approx(4.0, rel=0.35)  # ∝ 1/√n


def test_auc_bootstrap_ci_one_class_raises():
    with pytest.raises(ValueError, match="both classes"):
        auc_bootstrap_ci(torch.randn(5), torch.ones(5, dtype=torch.bool))


@pytest.mark.parametrize("features", [False, True])
def test_running_max_over_the_mask_matches_loop(features):
    _, values, mask = random_batch(8)
    x = torch.stack([values, -values], dim=-1) if features else values
    got = running_max(x, mask)
    for b in range(mask.shape[0]):
        peak = None
        for i in range(mask.shape[1]):
            if mask[b, i]:
                peak = x[b, i] if peak is None else torch.maximum(peak, x[b, i])
            close(got[b, i], torch.zeros_like(x[b, i]) if peak is None else peak)
