"""Verifiable-critic weighting (DESIGN §7): a value head learns the chance that a solution is correct from the
records' `is_correct`; the TD errors / GAE advantages of each target token become the weights of the heads
that predict it.

Notation (all Float[B,T] unless said): values[b,i] = V(s_i), the value of the prefix x_≤i; mask[b,j] marks
completion tokens (one contiguous run per row, never at j=0); the terminal reward sits on the last completion
token. "The value of token j" is V(s_{j−1}), the prediction made before token j is emitted; V(s_last) is
never used (the episode ends with the last token).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from scipy.stats import mannwhitneyu
from torch import Tensor

from wmtp.config import CriticConfig

# ---- the math (public contracts) ---------------------------------------------------------------------------


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


def kstep_td(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, n_heads: int) -> Tensor:
    """The proposal's k-step TD error per head, Float[B,T,H]: for target j = t+k with t+1..t+k completion tokens,
    δ[t,k] = Σ_{i=1..k} γ^{i−1} r_{t+i} + γ^k·V(s_{t+k})·[t+k not last] − V(s_t); 0 elsewhere."""
    mask = mask.bool()
    bootstrap = torch.where(last_completion_token(mask), 0.0, values)
    starts_in = shift_left(mask, 1)  # t+1 is a completion token
    out, reward_sum = [], torch.zeros_like(values)
    for k in range(1, n_heads + 1):
        reward_sum = reward_sum + gamma ** (k - 1) * shift_left(rewards, k)
        delta = reward_sum + gamma**k * shift_left(bootstrap, k) - values
        out.append(torch.where(starts_in & shift_left(mask, k), delta, 0.0))
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


# ---- the weight function ----------------------------------------------------------------------------------


@dataclass
class CriticEval:
    """Validation accumulator: value predictions V(s_{j−1}) and Monte-Carlo returns on completion tokens,
    the prediction before each row's last token with its label, and |V − V_anchor| when an anchor exists."""

    preds: list[Tensor] = field(default_factory=list)
    targets: list[Tensor] = field(default_factory=list)
    last_scores: list[Tensor] = field(default_factory=list)
    labels: list[Tensor] = field(default_factory=list)
    drift: list[Tensor] = field(default_factory=list)

    def result(self, prefix: str = "val_") -> dict[str, float]:
        preds, targets = torch.cat(self.preds), torch.cat(self.targets)
        scores, labels = torch.cat(self.last_scores), torch.cat(self.labels)
        out = {
            f"{prefix}value_loss": (preds - targets).pow(2).mean().item(),
            f"{prefix}explained_var": explained_variance(preds, targets),
            f"{prefix}auc_last": auc(scores, labels) if 0 < labels.sum() < len(labels) else math.nan,
        }
        if self.drift:
            out[f"{prefix}drift"] = torch.cat(self.drift).mean().item()
        return out


class CriticWeight:
    """Raw weights from the value head's TD errors or advantages (`weighting.critic.mode`), its value loss with
    drift control, and its validation metrics. The trainer puts the detached values V(s_i) into
    `batch["values"]` (Float[B,T]) before calling it (`needs_values`).

    reward_rate: fraction of correct training records; with `reward_norm=zscore` terminal rewards become
    (r − μ)/σ with μ, σ the mean and std of the training records' rewards.
    """

    needs_ce = False
    needs_values = True

    def __init__(self, cfg: CriticConfig, *, reward_rate: float):
        self.cfg = cfg
        rc, ri = cfg.reward_correct, cfg.reward_incorrect
        if cfg.reward_norm == "zscore":
            mean = reward_rate * rc + (1 - reward_rate) * ri
            std = math.sqrt(reward_rate * (1 - reward_rate)) * abs(rc - ri)
            if std == 0:
                raise ValueError("reward_norm=zscore needs both correct and incorrect training records")
            rc, ri = (rc - mean) / std, (ri - mean) / std
        self.reward_correct, self.reward_incorrect = rc, ri
        self.moments = RunningMoments(cfg.adv_momentum)
        self.anchors: dict[str, Tensor] = {}
        self._stats: dict[str, float] = {}

    # ---- pieces -------------------------------------------------------------------------------------------

    def rewards(self, batch: dict[str, Any]) -> Tensor:
        return terminal_rewards(
            batch["is_correct"], batch["loss_mask"],
            reward_correct=self.reward_correct, reward_incorrect=self.reward_incorrect,
        )

    def anchor_values(self, batch: dict[str, Any]) -> Tensor | None:
        """The stage-1 critic's V(s_i) for the batch's records, Float[B,T] (None before stage 2)."""
        if not self.anchors:
            return None
        mask = batch["attention_mask"].bool()
        out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        for b, record_id in enumerate(batch["ids"]):
            if record_id not in self.anchors:
                raise KeyError(f"no stage-1 anchor values for record {record_id!r}")
            out[b][mask[b]] = self.anchors[record_id].to(out.device)
        return out

    # ---- weights ------------------------------------------------------------------------------------------

    def __call__(self, batch: dict[str, Any], valid: Tensor, ce: Tensor | None) -> Tensor:
        """Raw weights Float[B,T,H] ≥ 0 for the heads' targets j = t+k (training: updates the running moments)."""
        cfg, H = self.cfg, valid.shape[-1]
        values, mask = batch["values"].detach().float(), batch["loss_mask"].bool()
        rewards = self.rewards(batch)
        delta = td_errors(rewards, values, mask, cfg.gamma)
        advantages = discounted_sums(delta, mask, cfg.gamma * cfg.lam)  # = gae(...)[0], sharing δ
        if cfg.mode == "kstep":
            weights = kstep_td(rewards, values, mask, cfg.gamma, H).abs()
        else:
            if cfg.mode == "abs_td":
                per_token = delta.abs()
            else:  # exp_adv (AWR): whitened by running moments, never updated outside training
                self.moments.update(advantages[mask])
                per_token = torch.exp(self.moments.whiten(advantages) / cfg.beta).clamp(max=cfg.w_max)
            weights = torch.stack([shift_left(per_token, k) for k in range(1, H + 1)], dim=-1)
        if not cfg.lm_on_incorrect:
            weights = weights * batch["is_correct"].bool()[:, None, None]
        adv = advantages[mask]
        self._stats = {
            "adv_mean": adv.mean().item() if adv.numel() else 0.0,
            "adv_std": adv.std(unbiased=False).item() if adv.numel() else 0.0,
            "td_abs_mean": delta[mask].abs().mean().item() if adv.numel() else 0.0,
        }
        return weights.detach()

    def last_stats(self) -> dict[str, float]:
        return dict(self._stats)

    # ---- value loss ---------------------------------------------------------------------------------------

    def value_loss(self, values: Tensor, batch: dict[str, Any], *, stage: int, n_positions: int) -> Tensor:
        """Σ over completion tokens of the squared error of V(s_{j−1}) against its target, / n_positions.

        values: Float[B,T] with grad. Targets (detached): Monte-Carlo returns (λ=1) or λ-returns in stage 1
        (`pretrain_target`), λ-returns in stage 2. Stage 2 adds drift control against the stage-1 critic's
        predictions a: PPO-style clipping max((v−R)², (a + clip(v−a, ±value_clip) − R)²) and
        anchor_coef·(v−a)².
        """
        cfg, mask = self.cfg, batch["loss_mask"].bool()
        lam = 1.0 if stage == 1 and cfg.pretrain_target == "mc" else cfg.lam
        _, returns = gae(self.rewards(batch), values.detach().float(), mask, cfg.gamma, lam)
        pred = shift_right(values.float())[mask]
        target = returns[mask]
        loss = (pred - target).pow(2)
        anchor = self.anchor_values(batch) if stage == 2 else None
        if anchor is not None:
            a = shift_right(anchor)[mask]
            if cfg.value_clip is not None:
                clipped = a + (pred - a).clamp(-cfg.value_clip, cfg.value_clip)
                loss = torch.maximum(loss, (clipped - target).pow(2))
            if cfg.anchor_coef > 0:
                loss = loss + cfg.anchor_coef * (pred - a).pow(2)
        return loss.sum() / max(n_positions, 1)

    # ---- validation ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def accumulate_eval(self, acc: CriticEval, values: Tensor, batch: dict[str, Any]) -> None:
        """Add one validation batch (values: Float[B,T]) to `acc`; reads no running state and changes none."""
        mask = batch["loss_mask"].bool()
        values = values.float()
        _, mc_returns = gae(self.rewards(batch), values, mask, self.cfg.gamma, 1.0)
        prev = shift_right(values)
        acc.preds.append(prev[mask].cpu())
        acc.targets.append(mc_returns[mask].cpu())
        last = last_completion_token(mask)
        has_last = last.any(dim=1)
        acc.last_scores.append(prev[last].cpu())
        acc.labels.append(batch["is_correct"].bool()[has_last].cpu())
        anchor = self.anchor_values(batch)
        if anchor is not None:
            acc.drift.append((prev - shift_right(anchor))[mask].abs().cpu())

    # ---- state (resume) -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"moments": self.moments.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.moments.load_state_dict(state["moments"])
