import logging

import pytest
import torch

from wmtp.config import SyntheticDataConfig
from wmtp.data.collate import EncodedRecord, collate, encode_records
from wmtp.data.records import Record
from wmtp.data.synthetic import generate_problems
from wmtp.data.tokenizer import train_tokenizer

PAD = 0
# bos=1, eos=2; a: prompt [10, 11, 12], completion [20, 21]; b: prompt [10], completion [20]
A = EncodedRecord("a", [1, 10, 11, 12, 20, 21, 2], n_prompt=4, is_correct=True)
B = EncodedRecord("b", [1, 10, 20, 2], n_prompt=2, is_correct=False)


def test_collate_right_padding_by_hand():
    batch = collate([A, B], pad_id=PAD)
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].tolist() == [
        [1, 10, 11, 12, 20, 21, 2],
        [1, 10, 20, 2, 0, 0, 0],
    ]
    assert batch["attention_mask"].dtype == torch.bool and batch["attention_mask"].int().tolist() == [
        [1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0, 0, 0],
    ]
    assert batch["loss_mask"].dtype == torch.bool and batch["loss_mask"].int().tolist() == [
        [0, 0, 0, 0, 1, 1, 1],
        [0, 0, 1, 1, 0, 0, 0],
    ]
    assert batch["is_correct"].dtype == torch.float32 and batch["is_correct"].tolist() == [1.0, 0.0]
    assert batch["ids"] == ["a", "b"]
    assert set(batch) == {"input_ids", "attention_mask", "loss_mask", "is_correct", "ids", "decisive", "has_spans"}
    assert not batch["decisive"].any() and batch["has_spans"].tolist() == [False, False]  # records without spans


def test_collate_left_padding_by_hand():
    batch = collate([B, A], pad_id=PAD, padding_side="left")
    assert batch["input_ids"].tolist() == [[0, 0, 0, 1, 10, 20, 2], [1, 10, 11, 12, 20, 21, 2]]
    assert batch["attention_mask"].int().tolist() == [[0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]]
    assert batch["loss_mask"].int().tolist() == [[0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1, 1]]


def test_collate_rejects_bad_padding_side():
    with pytest.raises(ValueError, match="padding_side"):
        collate([A], pad_id=PAD, padding_side="middle")


@pytest.fixture(scope="module")
def records():
    problems = generate_problems(SyntheticDataConfig(n_problems=10))
    return [
        Record(id=f"{p.problem_id}/x{i}", problem_id=p.problem_id, prompt=p.prompt, completion=c,
               is_correct=i < len(p.correct), source="test")
        for p in problems for i, c in enumerate(p.correct + p.incorrect)
    ]


@pytest.fixture(scope="module")
def tok(records):
    return train_tokenizer([r.prompt + r.completion for r in records], 350)


def test_encode_layout(records, tok):
    encoded = encode_records(records, tok, max_len=10_000)
    assert [e.id for e in encoded] == [r.id for r in records]
    for e, r in zip(encoded, records):
        prompt = tok(r.prompt, add_special_tokens=False)["input_ids"]
        completion = tok(r.completion, add_special_tokens=False)["input_ids"]
        assert e.input_ids == [tok.bos_token_id] + prompt + completion + [tok.eos_token_id]
        assert e.n_prompt == 1 + len(prompt) and e.is_correct == r.is_correct
        assert tok.decode(e.input_ids[e.n_prompt:-1]) == r.completion


def test_loss_mask_covers_completion_and_eos_only(records, tok):
    encoded = encode_records(records, tok, max_len=10_000)
    for side in ("right", "left"):
        batch = collate(encoded, pad_id=tok.pad_token_id, padding_side=side)
        assert not (batch["loss_mask"] & ~batch["attention_mask"]).any()
        for b, e in enumerate(encoded):
            targets = batch["input_ids"][b][batch["loss_mask"][b]].tolist()
            assert targets == e.input_ids[e.n_prompt:] and targets[-1] == tok.eos_token_id
            assert batch["input_ids"][b][batch["attention_mask"][b]].tolist() == e.input_ids
        assert batch["input_ids"].shape[1] == max(len(e.input_ids) for e in encoded)


def test_truncation_keeps_prompt_start_and_drops_empty_completions(records, tok, caplog):
    full = encode_records(records, tok, max_len=10_000)
    n_prompt = full[0].n_prompt
    cut = encode_records(records[:1], tok, max_len=n_prompt + 2)
    assert cut[0].input_ids == full[0].input_ids[: n_prompt + 2] and cut[0].n_prompt == n_prompt
    assert cut[0].input_ids[-1] != tok.eos_token_id  # the eos was cut away with the completion's end
    assert collate(cut, pad_id=0)["loss_mask"].sum().item() == 2

    with caplog.at_level(logging.WARNING, logger="wmtp.data.collate"):
        assert encode_records(records[:1], tok, max_len=n_prompt) == []
    assert "dropped 1 of 1 records" in caplog.text


def test_collate_carries_ref_ce_aligned_with_tokens():
    a = EncodedRecord("a", A.input_ids, A.n_prompt, True, ref_ce=[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    b = EncodedRecord("b", B.input_ids, B.n_prompt, False, ref_ce=[0.0, 7.0, 8.0, 9.0])
    right = collate([a, b], pad_id=PAD)
    assert right["ref_ce"].dtype == torch.float32
    assert right["ref_ce"].tolist() == [[0, 1, 2, 3, 4, 5, 6], [0, 7, 8, 9, 0, 0, 0]]
    left = collate([b, a], pad_id=PAD, padding_side="left")
    assert left["ref_ce"].tolist() == [[0, 0, 0, 0, 7, 8, 9], [0, 1, 2, 3, 4, 5, 6]]
    assert "ref_ce" not in collate([A, B], pad_id=PAD)
    with pytest.raises(ValueError, match="ref_ce"):
        collate([a, B], pad_id=PAD)  # a batch mixing scored and unscored records
    with pytest.raises(ValueError, match="3 ref_ce values for 4 tokens"):
        collate([EncodedRecord("c", B.input_ids, 2, True, ref_ce=[0.0, 1.0, 2.0])], pad_id=PAD)
