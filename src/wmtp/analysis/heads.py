"""Per-head CE and top-1 accuracy on held-out records, and the error rate by token difficulty (reference CE bins).

Head k at position t predicts token j = t + o_k, o the model's head offsets (default o_k = k; DESIGN §4); it is
right when argmax_v logits_k[t, v] = x_j.
A token's difficulty is a reference model's CE of it, ref_ce[j] (nats); errors are counted per bin of ref_ce.
Every run is measured on the same records (the correct validation solutions), whatever it trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from wmtp.data.collate import EncodedRecord, collate
from wmtp.model.mtp import MTPModel
from wmtp.train.step import batch_targets

DIFFICULTY_EDGES = [0.0, 0.25, 1.0, 2.0, 4.0]  # nats; the last bin is [4, ∞)


def bin_labels(edges: Sequence[float] = DIFFICULTY_EDGES) -> list[str]:
    return [f"[{lo:g}, {hi:g})" for lo, hi in zip(edges, edges[1:])] + [f"≥ {edges[-1]:g}"]


@torch.no_grad()
def evaluate_heads(
    model: MTPModel,
    records: list[EncodedRecord],
    *,
    pad_id: int,
    reference: torch.nn.Module | None = None,
    edges: Sequence[float] = DIFFICULTY_EDGES,
    batch_size: int = 16,
) -> dict[str, Any]:
    """{"ce_h{k}" (mean nats), "acc_h{k}", "n_h{k}"} per head over the valid (t,k) entries of `records`; with a `reference` (a
    `ReferenceScorer`: (input_ids, attention_mask) → ref_ce Float[B,T]) also "difficulty": {"edges", "labels",
    "n_h{k}": tokens per bin, "error_h{k}": error rate per bin (None for an empty bin)}."""
    was_training = model.training
    model.eval()
    H, offsets, n_bins = model.n_heads, model.head_offsets, len(edges)
    correct, total, ce_sum = torch.zeros(H), torch.zeros(H), torch.zeros(H, dtype=torch.float64)
    bin_err, bin_n = torch.zeros(H, n_bins), torch.zeros(H, n_bins)
    bounds = torch.tensor(list(edges), dtype=torch.float32)
    for i in range(0, len(records), batch_size):
        batch = collate(records[i : i + batch_size], pad_id=pad_id)
        targets, valid = batch_targets(batch, H, offsets=offsets)  # [B,T,H]
        z, ctx = model.trunk_forward(batch["input_ids"], batch["attention_mask"])
        ref = None if reference is None else reference(batch["input_ids"], batch["attention_mask"]).float()  # [B,T]
        for k, o in enumerate(offsets, start=1):
            sel = valid[..., k - 1]
            if not sel.any():
                continue
            logits = model.head_hidden(k, z, ctx)[sel] @ model.unembed.T  # [N,V]
            target = targets[..., k - 1][sel]  # [N]
            hit = (logits.argmax(-1) == target).float()  # [N]
            ce_sum[k - 1] += F.cross_entropy(logits.float(), target, reduction="sum").double()
            correct[k - 1] += hit.sum()
            total[k - 1] += hit.numel()
            if ref is not None:
                ref_target = _shift_left(ref, o)[sel]  # [N]: ref_ce of token j = t + o_k
                idx = (torch.bucketize(ref_target, bounds, right=True) - 1).clamp(0, n_bins - 1)
                bin_n[k - 1] += torch.bincount(idx, minlength=n_bins).float()
                bin_err[k - 1] += torch.bincount(idx, weights=1 - hit, minlength=n_bins).float()
    model.train(was_training)
    out: dict[str, Any] = {}
    for k in range(1, H + 1):
        out[f"ce_h{k}"] = (ce_sum[k - 1] / total[k - 1]).item() if total[k - 1] else None
        out[f"acc_h{k}"] = (correct[k - 1] / total[k - 1]).item() if total[k - 1] else None
        out[f"n_h{k}"] = int(total[k - 1])
    if reference is not None:
        diff: dict[str, Any] = {"edges": list(edges), "labels": bin_labels(edges)}
        for k in range(1, H + 1):
            diff[f"n_h{k}"] = bin_n[k - 1].int().tolist()
            diff[f"error_h{k}"] = [(e / n).item() if n else None for e, n in zip(bin_err[k - 1], bin_n[k - 1])]
        out["difficulty"] = diff
    return out


def _shift_left(x: Tensor, k: int) -> Tensor:
    """y[b, t] = x[b, t + k] (0 past the end): Float[B,T] → Float[B,T]."""
    return torch.cat([x[:, k:], x.new_zeros(x.shape[0], min(k, x.shape[1]))], dim=1)
