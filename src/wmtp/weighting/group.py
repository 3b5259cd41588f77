"""Critic-free, GRPO-style group weighting (issue 19; DESIGN §7): a solution's weight comes from how much better
it did than the other solutions of its problem.

A group g is the set of solutions of one problem (`Record.problem_id`) in one split: the dataset's correct and
incorrect solutions, or the n samples per problem `wmtp label` writes. Reward r_i = is_correct (1/0). Advantage:

    A_i = (r_i − mean_g r) / (std_g r + eps)      std: the population standard deviation (divides by |g|)

and A_i = 0 exactly when g has one member or zero spread (every solution correct, or none). The row weight is

    transform=exp        w_i = min(exp(A_i / beta), max_weight)      (> 0: incorrect solutions keep some weight)
    transform=positive   w_i = max(A_i, 0)                           (only better-than-average solutions learn)

and every valid (t,k) of record i gets w_i; the trainer then normalises (DESIGN §6). Statistics are computed once,
in `prepare`, over the whole training split (Records, so a record `data.max_len` dropped still counts in its
group), and travel with each encoded record (`EncodedRecord.record_weights`, `batch["record_weight"]`): a record's
weight is the same whatever the batching, packing, gradient accumulation or number of ranks. Validation records
get the statistics of the validation split itself (splits are by problem, so its problems are not in the
training split); the trainer's localisation metrics read those.

What it can localise: only between records. A row's weight is constant over its tokens, so within one incorrect
record decisive and other targets weigh the same (loc AUC 0.5 within a record by construction); the pooled loc
AUC over many records moves away from 0.5 only as far as records with more decisive targets happen to get other
weights. It says which solutions to learn from, not which tokens; combine it with a token-level weighting for that.

Default, by measurement: `transform=exp`, beta=2. Tiny preset, data.train_on=all, batch 16, 2 seeds (0, 1), on a
shared, loaded 2-core machine (noisy; the embedded task's training groups are 204 of 2 correct + 3 incorrect
solutions, 12 others, so A ≈ +1.22 / −0.82). Validation CE on the correct validation records (lower is better) and
the localisation of the last validation:

    variant        fine-tune CE   from-scratch CE   loc_auc_incorrect  loc_auc_correct  row weight correct, incorrect
    exp beta=2     1.174  1.151   2.918  2.888      0.512              0.474            1.82, 0.66
    exp beta=1     1.199  1.179   3.217  3.147      0.513              0.476            3.33, 0.44
    positive       1.240  1.237   3.548  3.435      0.500 (ties at 0)  0.474            1.20, 0
    uniform@all    1.181  1.168   2.627  2.659      0.500              0.500            1, 1
    uniform        1.112  1.104   (correct records only)

fine-tune: a 200-step uniform base (lr 3e-3) fine-tuned for 60 steps at lr 1e-3 (the demo's recipe, with
half its base); from scratch: 100 steps at lr 3e-3. Seeds 0 and 1 side by side; the loc AUCs (fixed row weights)
are the same in both settings and seeds.

exp with beta=2 is the best of the three on both seeds, and a little below uniform@all after the base (0.007, 0.017:
within noise at 2 seeds); positive is the worst, as it trains on the ≈40% correct rows of each batch only. From
scratch, uniform@all learns fastest: a mutant is mostly correct code, so down-weighting it discards data. EOS shares
equal the EOS entry shares (±0.0003): a row weight does not favour EOS. Larger beta was not tried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from wmtp.config import ConfigError, RunConfig
from wmtp.data.collate import EncodedRecord
from wmtp.data.records import DataError, Record
from wmtp.registry import register_weighting
from wmtp.weighting.base import NoOptions, RunContext, WeightFn


def group_advantages(rewards: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """A_i = (r_i − mean_g r) / (std_g r + eps) over the members of each group g (population std); 0 exactly in a
    group with one member or zero spread. rewards: Float[N]; group_ids: Long[N] (any integer labels); returns
    Float[N] (rewards' dtype; computed in float64)."""
    if rewards.dim() != 1 or group_ids.shape != rewards.shape:
        raise ValueError(f"rewards and group_ids must be 1-D of one length, got {tuple(rewards.shape)} and "
                         f"{tuple(group_ids.shape)}")
    if group_ids.is_floating_point() or group_ids.is_complex() or group_ids.dtype == torch.bool:
        raise ValueError(f"group_ids must be integers, got {group_ids.dtype}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    out_dtype = rewards.dtype if rewards.is_floating_point() else torch.get_default_dtype()
    r = rewards.detach().to(torch.float64)
    if not torch.isfinite(r).all():
        raise ValueError("rewards must be finite")
    if r.numel() == 0:
        return r.to(out_dtype)
    _, g = torch.unique(group_ids, return_inverse=True)  # g: Long[N] in 0..G-1
    G = int(g.max()) + 1
    count = torch.bincount(g, minlength=G).to(torch.float64)  # [G]
    mean = torch.zeros(G, dtype=torch.float64, device=r.device).index_add_(0, g, r) / count
    dev = r - mean[g]
    std = (torch.zeros_like(mean).index_add_(0, g, dev * dev) / count).sqrt()
    top = torch.full_like(mean, -torch.inf).scatter_reduce(0, g, r, "amax")
    bottom = torch.full_like(mean, torch.inf).scatter_reduce(0, g, r, "amin")
    spread = (count > 1) & (top > bottom)  # [G]; exact: no rounding of the mean can fake a spread
    advantages = torch.where(spread[g], dev / (std[g] + eps), 0.0)
    return advantages.to(out_dtype)


class GroupConfig(NoOptions):
    """Critic-free group weighting (`wmtp.weighting.group`): row weights from group-normalised correctness."""

    transform: Literal["exp", "positive"] = Field(
        "exp",
        description="Row weight from the advantage A: exp = min(exp(A/beta), max_weight) (A = 0 → 1: a problem "
        "whose solutions all agree keeps weight 1); positive = max(A, 0) (only better-than-average solutions).",
    )
    beta: float = Field(2.0, gt=0, description="exp temperature: larger is closer to uniform (2: the better "
                        "validation CE of 1 and 2 on the tiny preset; module docstring).")
    max_weight: float = Field(20.0, gt=0, description="exp cap on a raw row weight.")
    eps: float = Field(1e-6, ge=0, description="Added to each group's standard deviation.")


def group_weights(advantages: Tensor, cfg: GroupConfig) -> Tensor:
    """Row weights Float[N] ≥ 0 from advantages Float[N] (module docstring)."""
    if cfg.transform == "exp":
        return torch.exp(advantages / cfg.beta).clamp(max=cfg.max_weight)
    return advantages.clamp(min=0.0)


def record_group_weights(records: Sequence[Record], cfg: GroupConfig) -> dict[str, float]:
    """Record id → row weight, with group statistics over all of `records` (one split)."""
    problems: dict[str, int] = {}
    group_ids = torch.tensor([problems.setdefault(r.problem_id, len(problems)) for r in records], dtype=torch.long)
    rewards = torch.tensor([float(r.is_correct) for r in records], dtype=torch.float64)
    weights = group_weights(group_advantages(rewards, group_ids, cfg.eps), cfg).tolist()
    out: dict[str, float] = {}
    for r, w in zip(records, weights):
        if out.setdefault(r.id, w) != w:
            raise DataError(f"record id {r.id!r} occurs more than once with different group weights: ids must be "
                            "unique within a split")
    return out


def with_group_weights(encoded: Sequence[EncodedRecord], weights: dict[str, float]) -> list[EncodedRecord]:
    """Copies of plain encoded records carrying their row weight (`record_weights=[w]`)."""
    missing = [e.id for e in encoded if e.id not in weights]
    if missing:
        raise DataError(f"{len(missing)} encoded records have no group weight (first: {missing[0]!r})")
    return [replace(e, record_weights=[weights[e.id]]) for e in encoded]


def group_summary(records: Sequence[Record], weights: dict[str, float]) -> dict[str, Any]:
    """What meta.json records of one split's groups: counts, and the mean row weight of correct / incorrect records."""
    sizes: dict[str, list[bool]] = {}
    for r in records:
        sizes.setdefault(r.problem_id, []).append(r.is_correct)
    mixed = sum(1 for v in sizes.values() if any(v) and not all(v))
    out: dict[str, Any] = {"n_records": len(records), "n_groups": len(sizes), "n_mixed_groups": mixed}
    for name, flag in (("correct", True), ("incorrect", False)):
        ws = [weights[r.id] for r in records if r.is_correct == flag]
        out[f"mean_weight_{name}"] = sum(ws) / len(ws) if ws else None
    return out


@register_weighting("group")
class GroupWeight(WeightFn):
    """WeightFn: every valid (t,k) of a record gets the record's group weight (module docstring), attached to the
    records in `prepare` and read from batch["record_weight"] (Float[B,T], constant over a record's tokens)."""

    Config = GroupConfig
    train_on = "all"  # the group needs its incorrect solutions

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Also refuses normalize=per_position: a row weight is the same on every head of a position, so per-position
        normalisation (w·n(t)/Σ_k w) cancels it to 1 and the run would train as uniform (its controls and hybrids
        too)."""
        super().check_config(cfg)
        if cfg.weighting.normalize == "per_position":
            raise ConfigError(f"weighting.normalize=per_position cancels the group weights (one weight per record, "
                              f"equal on every head of a position) to uniform; use weighting.normalize=mean with "
                              f"weighting.name={cfg.weighting.name}")

    def prepare(self, run: RunContext) -> None:
        """Group statistics of the training split (and, for validation, of the validation split), once."""
        train = record_group_weights(run.data.train, self.cfg)
        valid = record_group_weights(run.data.valid, self.cfg)
        run.train, run.valid = with_group_weights(run.train, train), with_group_weights(run.valid, valid)
        run.meta["group"] = {"train": group_summary(run.data.train, train),
                             "valid": group_summary(run.data.valid, valid)}

    def weights(
        self, batch: dict[str, Any], valid: Tensor, ce: Tensor | None, outputs: dict[str, Tensor]
    ) -> Tensor:
        """Raw weights Float[B,T,H]: w[b,t,k] = record_weight[b,t] (the row weight of the record position t is in;
        a valid target t+k lies in the same record)."""
        if "record_weight" not in batch:
            raise RuntimeError("the batch has no record_weight: GroupWeight.prepare attaches it to the run's records")
        w = batch["record_weight"].to(valid.device, torch.float32)
        return torch.where(valid, w[:, :, None], 0.0)
