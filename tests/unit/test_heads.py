"""Per-head CE / top-1 accuracy and error by token difficulty against a naive loop over records, t and k."""

from __future__ import annotations

import pytest
import torch

from oracles import tiny_model
from wmtp.analysis.heads import evaluate_heads
from wmtp.data.collate import EncodedRecord

EDGES = [0.0, 1.0, 3.0]


class FixedReference(torch.nn.Module):
    """ref_ce[b, j] = (token id at j) mod 5: a deterministic 'difficulty' per token."""

    def forward(self, input_ids, attention_mask):
        return (input_ids % 5).float() * attention_mask


def records(n=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = 6 + 3 * i
        ids = [1] + torch.randint(3, 97, (length - 1,), generator=g).tolist()
        out.append(EncodedRecord(f"r{i}", ids, n_prompt=2 + i % 3, is_correct=True))
    return out


@torch.no_grad()
def naive(model, recs, H):
    """Loop over records, positions t and heads k with the full logits of one record at a time."""
    hits, ce, n = [0] * H, [0.0] * H, [0] * H
    err = [[0] * (len(EDGES)) for _ in range(H)]
    cnt = [[0] * (len(EDGES)) for _ in range(H)]
    for r in recs:
        ids = torch.tensor([r.input_ids])
        logits = model(ids, torch.ones_like(ids, dtype=torch.bool))[0]  # [T,H,V]
        T = len(r.input_ids)
        for t in range(T):
            for k in range(1, H + 1):
                j = t + k
                if j >= T or j < r.n_prompt:  # target must exist and be a completion token
                    continue
                row = logits[t, k - 1]
                hit = int(row.argmax()) == r.input_ids[j]
                hits[k - 1] += hit
                n[k - 1] += 1
                ce[k - 1] += float(torch.logsumexp(row, 0) - row[r.input_ids[j]])
                d = r.input_ids[j] % 5
                b = max(i for i, e in enumerate(EDGES) if d >= e)
                cnt[k - 1][b] += 1
                err[k - 1][b] += not hit
    return hits, ce, n, err, cnt


def test_evaluate_heads_matches_a_naive_loop():
    H = 3
    model = tiny_model(n_heads=H, init_std=0.5).eval()
    recs = records()
    out = evaluate_heads(model, recs, pad_id=0, reference=FixedReference(), edges=EDGES, batch_size=2)
    hits, ce, n, err, cnt = naive(model, recs, H)
    for k in range(1, H + 1):
        assert out[f"n_h{k}"] == n[k - 1] > 0
        assert out[f"acc_h{k}"] == pytest.approx(hits[k - 1] / n[k - 1])
        assert out[f"ce_h{k}"] == pytest.approx(ce[k - 1] / n[k - 1], rel=1e-5)
        d = out["difficulty"]
        assert d[f"n_h{k}"] == cnt[k - 1]
        expected = [e / c if c else None for e, c in zip(err[k - 1], cnt[k - 1])]
        assert d[f"error_h{k}"] == pytest.approx(expected)
    assert out["difficulty"]["labels"] == ["[0, 1)", "[1, 3)", "≥ 3"]


def test_without_reference_no_difficulty_and_model_mode_restored():
    model = tiny_model(n_heads=2).train()
    out = evaluate_heads(model, records(3), pad_id=0)
    assert "difficulty" not in out and set(out) == {"ce_h1", "acc_h1", "n_h1", "ce_h2", "acc_h2", "n_h2"}
    assert model.training
