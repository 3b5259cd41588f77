"""data/collate.py: per-record values (EncodedRecord.record_weights) travel into batches and through packing."""

from __future__ import annotations

import pytest

from wmtp.data.collate import EncodedRecord, collate, pack_records


def records() -> list[EncodedRecord]:
    return [
        EncodedRecord("a", [1, 10, 11, 12, 2], n_prompt=2, is_correct=True, record_weights=[0.5]),
        EncodedRecord("b", [1, 20, 21, 2], n_prompt=3, is_correct=False, record_weights=[2.0]),
        EncodedRecord("c", [1, 30, 2], n_prompt=1, is_correct=True, record_weights=[3.0]),
    ]


def test_collate_spreads_each_record_value_over_its_tokens():
    a, b, _ = records()
    right = collate([a, b], pad_id=0)["record_weight"]
    assert right.tolist() == [[0.5] * 5, [2.0] * 4 + [0.0]]
    left = collate([a, b], pad_id=0, padding_side="left")["record_weight"]
    assert left.tolist() == [[0.5] * 5, [0.0] + [2.0] * 4]
    plain = [EncodedRecord(r.id, r.input_ids, r.n_prompt, r.is_correct) for r in (a, b)]
    assert "record_weight" not in collate(plain, pad_id=0)


def test_packing_carries_one_value_per_record():
    rows = pack_records(records(), max_len=9)
    assert [(r.id, r.record_weights) for r in rows] == [("a+b", [0.5, 2.0]), ("c", [3.0])]
    batch = collate(rows, pad_id=0)
    assert batch["record_weight"][0].tolist() == [0.5] * 5 + [2.0] * 4
    assert batch["record_weight"][1].tolist() == [3.0] * 3 + [0.0] * 6
    assert batch["segment_ids"][0].tolist() == [0] * 5 + [1] * 4


def test_records_with_and_without_values_do_not_mix():
    a, b, _ = records()
    bare = EncodedRecord(b.id, b.input_ids, b.n_prompt, b.is_correct)
    with pytest.raises(ValueError, match="record_weights and some do not"):
        collate([a, bare], pad_id=0)
    with pytest.raises(ValueError, match="with and without record_weights"):
        pack_records([a, bare], max_len=9)
    with pytest.raises(ValueError, match="2 record_weights for 1 records"):
        collate([EncodedRecord("x", [1, 5, 2], 1, True, record_weights=[1.0, 2.0])], pad_id=0)
