"""Localisation metrics and the EOS share against naive loops; uniform weights → 0.5 / 1.0."""

from __future__ import annotations

import math

import pytest
import torch

from wmtp.model.loss import mtp_targets
from wmtp.weighting.base import normalize_weights
from wmtp.weighting.localisation import (
    LocalisationAccumulator,
    at_targets,
    eos_share,
    last_completion_tokens,
    localisation_metrics,
)

H = 3


def make_batch(seed: int, B: int = 6, T: int = 14, ties: bool = False):
    g = torch.Generator().manual_seed(seed)
    attention = torch.ones(B, T, dtype=torch.bool)
    loss_mask = torch.zeros(B, T, dtype=torch.bool)
    for b in range(B):
        n = int(torch.randint(6, T + 1, (1,), generator=g))
        attention[b, n:] = False
        start = int(torch.randint(1, n - 2, (1,), generator=g))
        loss_mask[b, start:n] = True
    ids = torch.randint(3, 50, (B, T), generator=g)
    _, valid = mtp_targets(ids, loss_mask, attention, H)
    decisive = (torch.rand(B, T, generator=g) < 0.3) & loss_mask
    has_spans = torch.tensor([True, True, True, True, False, True][:B])
    is_correct = torch.tensor([False, True, False, True, False, False][:B])
    weights = torch.rand(B, T, H, generator=g) * 3
    if ties:
        weights = weights.round()
    return weights, valid, decisive, has_spans, is_correct, loss_mask


def naive_entries(weights, valid, decisive, has_spans, is_correct, cls: str, head: int | None):
    """(weight, decisive) of every counted entry, by explicit loops over b, t, k."""
    out = []
    B, T, n_heads = weights.shape
    for b in range(B):
        if not has_spans[b] or bool(is_correct[b]) != (cls == "correct"):
            continue
        for t in range(T):
            for k in range(1, n_heads + 1):
                if (head is None or k == head) and valid[b, t, k - 1]:
                    out.append((weights[b, t, k - 1].item(), bool(decisive[b, t + k])))
    return out


def naive_auc(entries):
    pos = [w for w, y in entries if y]
    neg = [w for w, y in entries if not y]
    if not pos or not neg:
        return math.nan
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def naive_lift(entries):
    total = sum(w for w, _ in entries)
    n_pos = sum(y for _, y in entries)
    if n_pos == 0 or total == 0:
        return math.nan
    return (sum(w for w, y in entries if y) / total) / (n_pos / len(entries))


def expected(weights, valid, decisive, has_spans, is_correct):
    out = {}
    for cls in ("incorrect", "correct"):
        for head, suffix in [(None, "")] + [(k, f"_h{k}") for k in range(1, H + 1)]:
            entries = naive_entries(weights, valid, decisive, has_spans, is_correct, cls, head)
            out[f"loc_auc_{cls}{suffix}"] = naive_auc(entries)
            out[f"loc_lift_{cls}{suffix}"] = naive_lift(entries)
    return out


def assert_close(got: dict, want: dict):
    assert got.keys() == want.keys()
    for key, value in want.items():
        if math.isnan(value):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("ties", [False, True])
def test_localisation_metrics_match_a_naive_loop(ties):
    weights, valid, decisive, has_spans, is_correct, _ = make_batch(0, ties=ties)
    got = localisation_metrics(weights, valid, decisive, has_spans, is_correct, H)
    assert_close(got, expected(weights, valid, decisive, has_spans, is_correct))
    assert not math.isnan(got["loc_auc_incorrect"]) and not math.isnan(got["loc_auc_correct"])


def test_accumulator_pools_entries_of_all_batches():
    batches = [make_batch(seed) for seed in (1, 2, 3)]
    acc = LocalisationAccumulator(H)
    for weights, valid, decisive, has_spans, is_correct, _ in batches:
        acc.add(weights, valid, decisive, has_spans, is_correct)
    pooled = [torch.cat(parts) for parts in zip(*batches)]
    assert_close(acc.result(), expected(*pooled[:5]))
    per_batch = [localisation_metrics(*b[:5], H)["loc_auc_incorrect"] for b in batches]
    assert acc.result()["loc_auc_incorrect"] != pytest.approx(sum(per_batch) / 3, abs=1e-9)  # not a mean of AUCs


@pytest.mark.parametrize("mode", ["mean", "per_position"])
def test_uniform_weights_give_exactly_half_and_one(mode):
    _, valid, decisive, has_spans, is_correct, _ = make_batch(4)
    weights = normalize_weights(torch.ones(valid.shape), valid, mode=mode)
    got = localisation_metrics(weights, valid, decisive, has_spans, is_correct, H)
    for key, value in got.items():
        assert value == (0.5 if key.startswith("loc_auc") else 1.0), key


def test_weight_on_decisive_targets_only_gives_auc_one():
    _, valid, decisive, has_spans, is_correct, _ = make_batch(5)
    weights = at_targets(decisive, H).float() * 2 + 0.1
    got = localisation_metrics(weights, valid, decisive, has_spans, is_correct, H)
    assert got["loc_auc_incorrect"] == 1.0 and got["loc_auc_correct"] == 1.0
    assert got["loc_lift_incorrect"] > 1.0
    got = localisation_metrics(2.2 - weights, valid, decisive, has_spans, is_correct, H)
    assert got["loc_auc_incorrect"] == 0.0 and got["loc_lift_incorrect"] < 1.0


def test_unannotated_rows_do_not_count_and_missing_classes_give_nan():
    weights, valid, decisive, has_spans, is_correct, _ = make_batch(6)
    base = localisation_metrics(weights, valid, decisive, has_spans, is_correct, H)
    changed = weights.clone()
    changed[~has_spans] = 100.0
    assert_close(localisation_metrics(changed, valid, decisive, has_spans, is_correct, H), base)
    no_decisive = torch.zeros_like(decisive)
    got = localisation_metrics(weights, valid, no_decisive, has_spans, is_correct, H)
    assert all(math.isnan(v) for v in got.values())
    all_decisive = torch.ones_like(decisive)
    got = localisation_metrics(weights, valid, all_decisive, has_spans, is_correct, H)
    assert math.isnan(got["loc_auc_incorrect"]) and got["loc_lift_incorrect"] == pytest.approx(1.0)


def test_at_targets_reads_token_t_plus_k():
    mask = torch.rand(3, 9, generator=torch.Generator().manual_seed(7)) < 0.5
    out = at_targets(mask, 4)
    for b in range(3):
        for t in range(9):
            for k in range(1, 5):
                assert out[b, t, k - 1] == (t + k < 9 and bool(mask[b, t + k]))


def naive_eos(weights, valid, loss_mask, segment_ids=None):
    B, T, n_heads = weights.shape
    w_eos = w_all = n_eos = n_all = 0.0
    for b in range(B):
        for t in range(T):
            for k in range(1, n_heads + 1):
                if not valid[b, t, k - 1]:
                    continue
                j = t + k
                nxt = j + 1
                new_record = segment_ids is not None and nxt < T and segment_ids[b, nxt] != segment_ids[b, j]
                last = loss_mask[b, j] and (nxt == T or not loss_mask[b, nxt] or new_record)
                w = weights[b, t, k - 1].item()
                w_all += w
                n_all += 1
                if last:
                    w_eos += w
                    n_eos += 1
    return {"eos_share": w_eos / w_all, "eos_entry_share": n_eos / n_all}


def test_eos_share_matches_a_naive_loop():
    weights, valid, _, _, _, loss_mask = make_batch(8)
    loss_mask[0, -1] = True  # a completion reaching the last position (truncated: its last token still counts)
    valid = mtp_targets(torch.zeros_like(loss_mask, dtype=torch.long), loss_mask, torch.ones_like(loss_mask), H)[1]
    got = eos_share(weights, valid, loss_mask)
    want = naive_eos(weights, valid, loss_mask)
    assert got == pytest.approx(want, rel=1e-12)
    assert eos_share(torch.ones(valid.shape), valid, loss_mask)["eos_share"] == pytest.approx(want["eos_entry_share"])


def test_eos_share_with_packed_records_counts_each_records_last_token():
    # one row, two records back to back: [p c c c][c c] with no prompt token between (a tokenizer without bos)
    loss_mask = torch.tensor([[False, True, True, True, True, True, False]])
    segment_ids = torch.tensor([[0, 0, 0, 0, 1, 1, -1]])
    attention = segment_ids >= 0
    valid = mtp_targets(torch.zeros_like(segment_ids), loss_mask, attention, 2, segment_ids=segment_ids)[1]
    assert last_completion_tokens(loss_mask, segment_ids)[0].tolist() == [False, False, False, True, False, True, False]
    weights = torch.rand(valid.shape, generator=torch.Generator().manual_seed(9))
    assert eos_share(weights, valid, loss_mask, segment_ids) == pytest.approx(
        naive_eos(weights, valid, loss_mask, segment_ids), rel=1e-12)
