"""Where a weighting puts its weight (DESIGN §9): localisation on ground-truth decisive tokens, and the EOS share.

Entry (b,t,k) of a weight tensor w: Float[B,T,H] (head k = index + 1) targets token j = t+o_k (DESIGN §4; o: the
model's head offsets, `offsets` below, default o_k = k). Only valid entries count (valid =
wmtp.model.loss.mtp_targets(...)[1], Bool[B,T,H], with the same offsets).

Localisation (validation): among the valid entries of annotated rows (has_spans[b]), an entry is *decisive* iff
decisive[b, t+o_k] (its target token overlaps one of the record's decisive_spans). On the entries of one class of
records — incorrect (suffix `_incorrect`) or correct (`_correct`) — of one head (`_h{k}`) or of all heads pooled
(no head suffix):

    loc_auc  = P(w_pos > w_neg) + ½·P(w_pos = w_neg)   pos: decisive entries, neg: the other entries
               (ROC AUC = Mann–Whitney U / (n_pos·n_neg); nan without a positive or without a negative entry)
    loc_lift = (Σ_decisive w / Σ w) / (n_decisive / n)  (nan without a decisive entry or when Σ w = 0)

0.5 / 1.0 mean no localisation (uniform weights give exactly these); above: more weight per entry on decisive
targets than elsewhere, below: less. The trainer measures the weights it would train with: the weighting's
validation_weights on each validation batch, normalised and clipped over that batch's valid entries as a training
micro-batch is; the entries of all batches are pooled before the AUC is computed once (LocalisationAccumulator),
not averaged over batches. The EOS target is decisive when a zero-width span sits at the end of the
completion (a deletion there: ending early is the mistake); a span reaching the end does not mark it.

EOS share (every training step): eos_share = Σ w on valid entries whose target token is the last completion token
of its row (of its record, with packing: segment_ids) / Σ w on valid entries; eos_entry_share = those entries'
share of the valid entries. wmtp.data.collate appends the tokenizer's EOS to every completion, so the last
completion token is EOS unless data.max_len truncated the record (then it is the last completion token kept).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import astuple, dataclass

import torch
from torch import Tensor

from wmtp.model.offsets import check_offsets
from wmtp.weighting.critic_math import auc, last_completion_token, shift_left

CLASSES = ("incorrect", "correct")


def at_targets(token_mask: Tensor, n_heads: int, offsets: Sequence[int] | None = None) -> Tensor:
    """Bool[B,T] on tokens j → Bool[B,T,H] on entries: out[b,t,k-1] = token_mask[b,t+o_k] (False where t+o_k ≥ T);
    offsets o: the model's head offsets (None = 1..n_heads)."""
    mask = token_mask.bool()
    return torch.stack([shift_left(mask, o) for o in check_offsets(offsets, n_heads)], dim=-1)


def last_completion_tokens(loss_mask: Tensor, segment_ids: Tensor | None = None) -> Tensor:
    """Bool[B,T]: the last loss-mask token of each row, or of each record of a packed row (segment_ids Long[B,T])."""
    mask = loss_mask.bool()
    last = last_completion_token(mask)
    if segment_ids is not None:
        record_ends = torch.zeros_like(mask)
        record_ends[:, :-1] = segment_ids[:, 1:] != segment_ids[:, :-1]
        last = last | (mask & record_ends)
    return last


def _auc_or_nan(scores: Tensor, labels: Tensor) -> float:
    n_pos = int(labels.sum())
    return auc(scores, labels) if 0 < n_pos < len(labels) else math.nan


def _lift(scores: Tensor, labels: Tensor) -> float:
    n_pos, total = int(labels.sum()), scores.sum().item()
    if n_pos == 0 or total <= 0:
        return math.nan
    return scores[labels].sum().item() * len(labels) / (total * n_pos)


class LocalisationAccumulator:
    """Valid entries of annotated rows over several batches (add), then the localisation metrics (result).
    offsets: the model's head offsets (None = 1..n_heads): entry (t,k) targets token t + offsets[k−1]."""

    def __init__(self, n_heads: int, offsets: Sequence[int] | None = None):
        self.n_heads = n_heads
        self.offsets = check_offsets(offsets, n_heads)
        self.n_rows = 0  # annotated rows added
        self._scores: dict[str, list[list[Tensor]]] = {c: [[] for _ in range(n_heads)] for c in CLASSES}
        self._labels: dict[str, list[list[Tensor]]] = {c: [[] for _ in range(n_heads)] for c in CLASSES}

    def add(self, weights: Tensor, valid: Tensor, decisive: Tensor, has_spans: Tensor, is_correct: Tensor) -> None:
        """weights: Float[B,T,H]; valid: Bool[B,T,H]; decisive: Bool[B,T] (token j); has_spans, is_correct: [B]."""
        if weights.shape != valid.shape or weights.shape[-1] != self.n_heads or decisive.shape != weights.shape[:2]:
            raise ValueError(f"weights {tuple(weights.shape)} and valid {tuple(valid.shape)} must be [B,T,"
                             f"{self.n_heads}] and decisive {tuple(decisive.shape)} [B,T]")
        self.n_rows += int(has_spans.bool().sum())
        positive = at_targets(decisive, self.n_heads, self.offsets)
        counted = valid.bool() & has_spans.bool()[:, None, None]
        correct = is_correct.bool()[:, None, None]
        for name, rows in zip(CLASSES, (~correct, correct)):
            keep = counted & rows
            for k in range(self.n_heads):
                sel = keep[..., k]
                self._scores[name][k].append(weights[..., k][sel].detach().double().cpu())
                self._labels[name][k].append(positive[..., k][sel].cpu())

    def result(self) -> dict[str, float]:
        """loc_auc_{class}[_h{k}] and loc_lift_{class}[_h{k}] for class in incorrect, correct (module docstring)."""
        out: dict[str, float] = {}
        for name in CLASSES:
            scores = [torch.cat(s) if s else torch.zeros(0, dtype=torch.float64) for s in self._scores[name]]
            labels = [torch.cat(y) if y else torch.zeros(0, dtype=torch.bool) for y in self._labels[name]]
            pooled_s, pooled_y = torch.cat(scores), torch.cat(labels)
            out[f"loc_auc_{name}"] = _auc_or_nan(pooled_s, pooled_y)
            out[f"loc_lift_{name}"] = _lift(pooled_s, pooled_y)
            for k in range(self.n_heads):
                out[f"loc_auc_{name}_h{k + 1}"] = _auc_or_nan(scores[k], labels[k])
                out[f"loc_lift_{name}_h{k + 1}"] = _lift(scores[k], labels[k])
        return out


def localisation_metrics(
    weights: Tensor,
    valid: Tensor,
    decisive: Tensor,
    has_spans: Tensor,
    is_correct: Tensor,
    n_heads: int,
    offsets: Sequence[int] | None = None,
) -> dict[str, float]:
    """The localisation metrics (module docstring) of one batch: weights Float[B,T,H], valid Bool[B,T,H],
    decisive Bool[B,T], has_spans Bool[B], is_correct Bool[B] (or 0/1 floats); offsets: the heads' (None = 1..H)."""
    acc = LocalisationAccumulator(n_heads, offsets)
    acc.add(weights, valid, decisive, has_spans, is_correct)
    return acc.result()


@dataclass
class EosShare:
    """Sums over micro-batches (and ranks) behind eos_share and eos_entry_share (module docstring)."""

    weight_eos: float = 0.0
    weight_total: float = 0.0
    n_eos: float = 0.0
    n_valid: float = 0.0

    def add(
        self,
        weights: Tensor,
        valid: Tensor,
        loss_mask: Tensor,
        segment_ids: Tensor | None = None,
        offsets: Sequence[int] | None = None,
    ) -> None:
        """weights: Float[B,T,H] (the normalised weights the step trains with); valid: Bool[B,T,H];
        loss_mask: Bool[B,T]; segment_ids: Long[B,T] of packed rows, or None; offsets: the heads' (None = 1..H)."""
        valid = valid.bool()
        eos = valid & at_targets(last_completion_tokens(loss_mask, segment_ids), weights.shape[-1], offsets)
        w = weights.detach().double()
        self.weight_eos += w[eos].sum().item()
        self.weight_total += w[valid].sum().item()
        self.n_eos += int(eos.sum())
        self.n_valid += int(valid.sum())

    def totals(self) -> tuple[float, float, float, float]:
        return astuple(self)

    def result(self) -> dict[str, float]:
        return {
            "eos_share": self.weight_eos / self.weight_total if self.weight_total > 0 else math.nan,
            "eos_entry_share": self.n_eos / self.n_valid if self.n_valid > 0 else math.nan,
        }


def eos_share(
    weights: Tensor,
    valid: Tensor,
    loss_mask: Tensor,
    segment_ids: Tensor | None = None,
    offsets: Sequence[int] | None = None,
) -> dict[str, float]:
    """{"eos_share", "eos_entry_share"} of one batch (EosShare.add for the shapes)."""
    acc = EosShare()
    acc.add(weights, valid, loss_mask, segment_ids, offsets)
    return acc.result()


def defined(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics that are not nan (a metrics row leaves undefined ones out: NaN is not JSON, and never equal)."""
    return {k: v for k, v in metrics.items() if not math.isnan(v)}
