"""Sequence packing: targets, masks and positions never cross a record; packed CE equals unpacked CE."""

import random

import pytest
import torch

from oracles import evaluate_ce, tiny_model
from wmtp.data.collate import EncodedRecord, collate, pack_records
from wmtp.model.loss import mtp_targets
from wmtp.model.mtp import packed_positions_and_mask


def _records(n, *, seed=0, vocab=97, min_len=4, max_len=20):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.randint(min_len, max_len)
        ids = [1] + [rng.randrange(3, vocab) for _ in range(length - 2)] + [2]
        out.append(EncodedRecord(f"r{i}", ids, n_prompt=rng.randint(1, length - 2), is_correct=rng.random() < 0.5))
    return out


def test_mtp_targets_with_segments_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    B, T, H = 3, 12, 4
    ids = torch.randint(3, 50, (B, T), generator=g)
    loss_mask = torch.rand(B, T, generator=g) < 0.7
    attn = torch.ones(B, T, dtype=torch.bool)
    attn[1, 9:] = False
    seg = torch.tensor([[0] * 5 + [1] * 4 + [2] * 3, [0] * 3 + [1] * 6 + [-1] * 3, [0] * 12])
    targets, valid = mtp_targets(ids, loss_mask, attn, H, segment_ids=seg)
    for b in range(B):
        for t in range(T):
            for k in range(1, H + 1):
                ok = t + k < T and bool(loss_mask[b, t + k]) and bool(attn[b, t]) and seg[b, t] == seg[b, t + k]
                assert bool(valid[b, t, k - 1]) == ok, (b, t, k)
                assert int(targets[b, t, k - 1]) == (int(ids[b, t + k]) if ok else -100)


def test_packed_positions_and_mask_match_loops():
    seg = torch.tensor([[0, 0, 0, 1, 1, 2, -1, -1], [0, 0, 0, 0, 0, 0, 0, 0]])
    pos, mask = packed_positions_and_mask(seg)
    assert pos.tolist() == [[0, 1, 2, 0, 1, 0, 0, 1], list(range(8))]
    for b in range(2):
        for q in range(8):
            for k in range(8):
                assert bool(mask[b, 0, q, k]) == (k <= q and seg[b, q] == seg[b, k])
    assert mask.any(dim=-1).all()  # no empty query row (sdpa would give NaN)


def test_pack_records_keeps_every_record_once_within_max_len():
    records = _records(40, seed=1)
    rows = pack_records(records, max_len=32)
    assert all(len(r.input_ids) <= 32 for r in rows)
    assert len(rows) < len(records)
    by_id = {r.id: r for r in records}
    seen = []
    for row in rows:
        pos = 0
        for part_id, (length, n_prompt) in zip(row.id.split("+"), row.segments):
            original = by_id[part_id]
            assert row.input_ids[pos:pos + length] == original.input_ids and n_prompt == original.n_prompt
            pos += length
            seen.append(part_id)
        assert pos == len(row.input_ids)
        assert row.is_correct == all(by_id[i].is_correct for i in row.id.split("+"))
    assert sorted(seen) == sorted(by_id)
    assert pack_records(records, max_len=32) == rows  # deterministic


def test_pack_records_refuses_records_longer_than_max_len():
    with pytest.raises(ValueError, match="max_len"):
        pack_records(_records(3, min_len=30, max_len=30), max_len=20)


def test_collate_packed_rows_segment_ids_and_loss_mask():
    a = EncodedRecord("a", [1, 10, 11, 12, 2], n_prompt=2, is_correct=True, ref_ce=[0.0, 1, 2, 3, 4])
    b = EncodedRecord("b", [1, 20, 21, 2], n_prompt=3, is_correct=False, ref_ce=[0.0, 5, 6, 7])
    c = EncodedRecord("c", [1, 30, 2], n_prompt=1, is_correct=True, ref_ce=[0.0, 8, 9])
    rows = pack_records([a, b, c], max_len=9)
    batch = collate(rows, pad_id=0)
    assert [r.id for r in rows] == ["a+b", "c"]
    assert batch["segment_ids"].tolist() == [[0] * 5 + [1] * 4, [0] * 3 + [-1] * 6]
    assert batch["loss_mask"].int().tolist() == [[0, 0, 1, 1, 1, 0, 0, 0, 1], [0, 1, 1] + [0] * 6]
    assert batch["ref_ce"][0].tolist() == [0, 1, 2, 3, 4, 0, 5, 6, 7]
    assert batch["is_correct"].tolist() == [0.0, 1.0]
    assert "segment_ids" not in collate([a, b], pad_id=0)  # unpacked batches are unchanged


def test_packed_batches_give_the_same_per_token_ce_as_unpacked():
    model = tiny_model(n_heads=3).eval()
    records = _records(12, seed=3, max_len=14)
    rows = pack_records(records, max_len=40)
    assert any(len(r.segments) > 1 for r in rows)
    unpacked = collate(records, pad_id=0)
    packed = collate(rows, pad_id=0)
    ce_u, valid_u = evaluate_ce(model, unpacked, chunk_tokens=64)
    ce_p, valid_p = evaluate_ce(model, packed, chunk_tokens=64)
    assert int(valid_u.sum()) == int(valid_p.sum()) > 0
    index = {r.id: i for i, r in enumerate(records)}
    for b, row in enumerate(rows):
        pos = 0
        for part_id, (length, _) in zip(row.id.split("+"), row.segments):
            i = index[part_id]
            assert torch.equal(valid_p[b, pos:pos + length], valid_u[i, :length])
            torch.testing.assert_close(ce_p[b, pos:pos + length], ce_u[i, :length], atol=1e-5, rtol=1e-5)
            pos += length
    # Without segment ids the same packed rows attend across records: the CE changes (the test can fail).
    plain = {k: v for k, v in packed.items() if k != "segment_ids"}
    ce_plain, _ = evaluate_ce(model, plain, chunk_tokens=64)
    assert not torch.allclose(ce_plain[valid_p], ce_p[valid_p], atol=1e-4)


def test_packed_step_gives_the_same_loss_and_gradients_as_unpacked():
    from wmtp.config import WeightingConfig
    from wmtp.train.step import batch_targets, forward_backward
    from wmtp.weighting.uniform import UniformWeight

    records = _records(10, seed=5, max_len=14)
    results = []
    for batch in (collate(records, pad_id=0), collate(pack_records(records, max_len=48), pad_id=0)):
        model = tiny_model(n_heads=3)
        n_valid = int(batch_targets(batch, model.n_heads)[1].sum())
        out = forward_backward(model, batch, weight_fn=UniformWeight(), wcfg=WeightingConfig(), n_valid_step=n_valid,
                               chunk_tokens=32)
        results.append((out.loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_u, grads_u), (loss_p, grads_p) = results
    assert loss_p == pytest.approx(loss_u, rel=1e-5)
    assert grads_u.keys() == grads_p.keys()
    for name in grads_u:
        torch.testing.assert_close(grads_p[name], grads_u[name], atol=1e-5, rtol=1e-4, msg=name)


def test_config_refuses_packing_with_per_record_weightings():
    from wmtp.config import ConfigError, load_config

    assert load_config(None, ["data.pack=true"]).data.pack
    with pytest.raises(ConfigError, match="data.pack=true cannot be used with weighting.name=critic"):
        load_config(None, ["data.pack=true", "weighting.name=critic", "data.train_on=all"])
    with pytest.raises(ConfigError, match="ref_on_the_fly"):
        load_config(None, ["data.pack=true", "weighting.name=rho1", "weighting.rho1.ref_on_the_fly=true"])
