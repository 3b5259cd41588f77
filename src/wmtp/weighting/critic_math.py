"""The verifiable critic's math (DESIGN §7), as pure functions of Float[B,T] tensors, and the running advantage
moments of AWR whitening.

Notation: values[b,i] = V(s_i), the value of the prefix x_≤i; mask[b,j] marks completion tokens (one contiguous
run per row, never at j=0); the terminal reward sits on the last completion token. "The value of token j" is
V(s_{j−1}), the prediction made before token j is emitted; V(s_last) is never used (the episode ends with the last
token).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from scipy.stats import mannwhitneyu
from torch import Tensor

from wmtp.model.offsets import check_offsets


def shift_right(x: Tensor) -> Tensor:
    """out[:, j] = x[:, j−1], 0 at j=0 (on the time axis, dim 1)."""
    out = torch.zeros_like(x)
    out[:, 1:] = x[:, :-1]
    return out


def shift_left(x: Tensor, k: int) -> Tensor:
    """out[:, t] = x[:, t+k], 0 where t+k ≥ T."""
    out = torch.zeros_like(x)
    if k < x.shape[1]:
        out[:, : x.shape[1] - k] = x[:, k:]
    return out


def last_completion_token(mask: Tensor) -> Tensor:
    """Bool[B,T]: the last True of each row's (contiguous) mask."""
    mask = mask.bool()
    following = torch.zeros_like(mask)
    following[:, :-1] = mask[:, 1:]
    return mask & ~following


def running_max(x: Tensor, mask: Tensor) -> Tensor:
    """out[b,i] = max over the masked j ≤ i of x[b,j] (elementwise over trailing feature dims), 0 before the row's
    first masked position. x: Float[B,T] or Float[B,T,F]; mask: Bool[B,T]."""
    m = mask.bool().reshape(mask.shape + (1,) * (x.dim() - 2))
    peak = torch.cummax(torch.where(m, x, -math.inf), dim=1).values
    return torch.where(m.cumsum(dim=1) > 0, peak, 0.0)


def terminal_rewards(
    is_correct: Tensor, mask: Tensor, *, reward_correct: float = 1.0, reward_incorrect: float = 0.0
) -> Tensor:
    """Rewards Float[B,T]: reward_correct / reward_incorrect on the last completion token of each row, else 0.
    is_correct: Float[B] or Bool[B]; mask: Bool[B,T] completion tokens."""
    per_row = torch.where(is_correct.bool(), reward_correct, reward_incorrect).to(torch.float32)
    return torch.where(last_completion_token(mask), per_row[:, None], 0.0)


def td_errors(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """δ_j = r_j + γ·V(s_j)·[j not last] − V(s_{j−1}) on completion tokens, 0 elsewhere."""
    mask = mask.bool()
    bootstrap = torch.where(last_completion_token(mask), 0.0, values)
    return torch.where(mask, rewards + gamma * bootstrap - shift_right(values), 0.0)


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over each row's completion: (advantages, returns), Float[B,T] each.

    A_j = Σ_{l≥0} (γλ)^l δ_{j+l} over the rest of the completion; returns_j = A_j + V(s_{j−1}); 0 off the mask.
    Vectorised as one matmul with the discount matrix Γ[j,j'] = (γλ)^{j'−j}·[j' ≥ j] ([T,T]); δ is 0 off the
    mask and the completion is contiguous, so the sum stops at the completion's end by itself.
    """
    mask = mask.bool()
    advantages = discounted_sums(td_errors(rewards, values, mask, gamma), mask, gamma * lam)
    returns = torch.where(mask, advantages + shift_right(values), 0.0)
    return advantages, returns


def discounted_sums(delta: Tensor, mask: Tensor, discount: float) -> Tensor:
    """Σ_{l≥0} discount^l δ_{j+l} on the mask, 0 off it; δ: Float[B,T], 0 off the (contiguous) mask."""
    T = delta.shape[1]
    pos = torch.arange(T, device=delta.device)
    lag = pos[None, :] - pos[:, None]  # [T,T]: j' − j
    matrix = torch.where(lag >= 0, discount ** lag.clamp(min=0).to(torch.float64), 0.0)
    return torch.where(mask, (delta.to(torch.float64) @ matrix.T).to(delta.dtype), 0.0)


def kstep_td(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, n_heads: int, offsets: Sequence[int] | None = None
) -> Tensor:
    """The proposal's k-step TD error per head, Float[B,T,H]: head k at position t, target j = t+o_k (a completion
    token; offsets o: the model's head offsets, None = 1..H so o_k = k), its window starting at s = max(t, c−1), c
    the row's first completion token:
    δ[t,k] = Σ_{i=s+1..j} γ^{i−s−1} r_i + γ^{j−s}·V(s_j)·[j not last] − V(s_s); 0 where j is not a completion token.
    For t ≥ c−1 this is the o_k-step error of the proposal; a window that starts in the prompt (t < c−1, the first
    o_k−1 targets of head k) starts at the last prompt state s_{c−1} instead, as the prompt holds no reward and no
    decision: δ[t,k] = the (j−c+1)-step error δ[c−1, ·] of the same target. So every valid target has a weight
    (none is 0 while counted in the normaliser's denominator)."""
    offsets = check_offsets(offsets, n_heads)
    mask = mask.bool()
    B, T = mask.shape
    longest = offsets[-1]
    bootstrap = torch.where(last_completion_token(mask), 0.0, values)
    starts_in = shift_left(mask, 1)  # t+1 is a completion token
    windows, reward_sum = [], torch.zeros_like(values)
    for n in range(1, longest + 1):  # n-step windows inside the completion: t+1..t+n all completion tokens
        reward_sum = reward_sum + gamma ** (n - 1) * shift_left(rewards, n)
        delta = reward_sum + gamma**n * shift_left(bootstrap, n) - values
        windows.append(torch.where(starts_in & shift_left(mask, n), delta, 0.0))
    inside = torch.stack(windows, dim=-1)  # [B,T,longest]: [..., n−1] is the n-step error
    first = mask.long().argmax(dim=1)  # c per row (0 for an empty row, whose mask is all False)
    from_prompt = inside[torch.arange(B, device=mask.device), (first - 1).clamp(min=0)]  # [B,longest]: δ[c−1, ·]
    pos = torch.arange(T, device=mask.device)[None, :]
    out = []
    for o in offsets:
        early = (pos < (first - 1)[:, None]) & shift_left(mask, o)  # [B,T]: window starts in the prompt
        horizon = (pos + o - first[:, None]).clamp(0, longest - 1)  # j − c, the 0-based horizon of δ[c−1, j−c+1]
        out.append(torch.where(early, from_prompt.gather(1, horizon), inside[..., o - 1]))
    return torch.stack(out, dim=-1)


def auc(scores: Tensor, labels: Tensor) -> float:
    """ROC AUC of `scores` for binary `labels` (1-D): P(s_pos > s_neg) + ½·P(tie), via Mann–Whitney U."""
    labels = labels.bool()
    pos, neg = scores[labels].double().cpu().numpy(), scores[~labels].double().cpu().numpy()
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"AUC needs both classes; got {len(pos)} positive and {len(neg)} negative")
    return float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def explained_variance(pred: Tensor, target: Tensor) -> float:
    """1 − Var(target − pred) / Var(target) (population variances of 1-D tensors); nan when Var(target)=0."""
    var = target.double().var(unbiased=False)
    if var == 0:
        return math.nan
    return float(1 - (target.double() - pred.double()).var(unbiased=False) / var)


def auc_bootstrap_ci(
    scores: Tensor, labels: Tensor, *, level: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of `auc(scores, labels)` (1-D, one entry per record): each of n_resamples
    resamples draws the positive and the negative records with replacement within their class (stratified, so
    every resample has both classes and the class counts of the data), from a generator seeded with `seed`; the
    CI is the (1−level)/2 and (1+level)/2 quantiles of the resampled AUCs."""
    labels = labels.bool().cpu()
    pos, neg = scores.double().cpu()[labels], scores.double().cpu()[~labels]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"AUC needs both classes; got {len(pos)} positive and {len(neg)} negative")
    g = torch.Generator().manual_seed(seed)
    p = pos[torch.randint(len(pos), (n_resamples, len(pos)), generator=g)]
    n = neg[torch.randint(len(neg), (n_resamples, len(neg)), generator=g)].sort(dim=1).values
    below = torch.searchsorted(n, p, side="left")  # negatives < p, per resample
    ties = torch.searchsorted(n, p, side="right") - below
    aucs = (below + 0.5 * ties).sum(dim=1).double() / (len(pos) * len(neg))
    low, high = torch.quantile(aucs, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(low), float(high)


# ---- running statistics ---------------------------------------------------------------------------------


@dataclass
class RunningMoments:
    """Exponential moving mean/variance of advantages (AWR whitening). Updated by training calls only."""

    momentum: float
    mean: float = 0.0
    var: float = 1.0
    count: int = 0  # updates so far (the first one sets the moments)

    def update(self, x: Tensor) -> None:
        """Fold in a batch of advantages (1-D); under torch.distributed the batch is every rank's, summed."""
        x = x.double()
        count = torch.tensor(float(x.numel()), dtype=torch.float64)
        moments = torch.stack([count, x.sum().cpu(), x.pow(2).sum().cpu()])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(moments)
        n, total, squares = moments.tolist()
        if n == 0:
            return
        mean = total / n
        var = max(squares / n - mean**2, 0.0)
        if self.count == 0:
            self.mean, self.var = mean, var
        else:
            m = self.momentum
            self.var = m * self.var + (1 - m) * var + m * (1 - m) * (mean - self.mean) ** 2
            self.mean = m * self.mean + (1 - m) * mean
        self.count += 1

    def whiten(self, x: Tensor) -> Tensor:
        return (x - self.mean) / math.sqrt(self.var + 1e-8)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]
