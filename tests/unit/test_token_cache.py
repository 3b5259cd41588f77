"""Multi-process tokenisation and the token cache keyed by (data fingerprint, tokenizer hash, max_len)."""

import random

import pytest

from wmtp.data.collate import EncodedRecord, encode_records
from wmtp.data.records import Record
from wmtp.data.token_cache import cache_key, encode_cached, encode_parallel, load_encoded, save_encoded
from wmtp.data.tokenizer import tokenizer_hash, train_tokenizer


@pytest.fixture(scope="module")
def data():
    rng = random.Random(0)
    words = ["def", "return", "x", "y", "+", "(", ")", ":", "\n    ", "if", "else", "0", "1", "print"]
    records = [
        Record(id=f"r{i}", problem_id=f"p{i % 7}", prompt=" ".join(rng.choices(words, k=rng.randint(2, 8))),
               completion=" ".join(rng.choices(words, k=rng.randint(1, 30))), is_correct=i % 3 != 0, source="test")
        for i in range(60)
    ]
    tok = train_tokenizer((r.prompt + r.completion for r in records), 300)
    return records, tok


def test_parallel_encoding_equals_serial(data):
    records, tok = data
    assert encode_parallel(records, tok, 24, num_proc=2)[0] == encode_records(records, tok, 24)


def test_cache_round_trip_and_hit(data, tmp_path):
    records, tok = data
    h = tokenizer_hash(tok)
    first = encode_cached(records, tok, 24, tokenizer_hash=h, cache_dir=tmp_path)[0]
    assert first == encode_records(records, tok, 24)
    entries = list((tmp_path / "tokens").iterdir())
    assert len(entries) == 1
    # A second call reads the entry instead of tokenising: make the entry recognisable, then read it back.
    marked = [EncodedRecord(e.id, e.input_ids[:-1] + [99], e.n_prompt, e.is_correct) for e in first]
    save_encoded(entries[0].with_name("marked"), marked)
    (entries[0] / "encoded.npz").replace(entries[0] / "old.npz")
    (entries[0].with_name("marked") / "encoded.npz").replace(entries[0] / "encoded.npz")
    assert encode_cached(records, tok, 24, tokenizer_hash=h, cache_dir=tmp_path)[0] == marked
    assert load_encoded(entries[0]) == marked


def test_cache_key_changes_with_data_tokenizer_and_max_len():
    base = cache_key("data", "tok", 24)
    assert len({base, cache_key("data2", "tok", 24), cache_key("data", "tok2", 24), cache_key("data", "tok", 32)}) == 4
    assert cache_key("data", "tok", 24) == base


def test_other_max_len_is_another_entry(data, tmp_path):
    records, tok = data
    h = tokenizer_hash(tok)
    encode_cached(records, tok, 24, tokenizer_hash=h, cache_dir=tmp_path)
    longer = encode_cached(records, tok, 64, tokenizer_hash=h, cache_dir=tmp_path)[0]
    assert longer == encode_records(records, tok, 64)
    assert len(list((tmp_path / "tokens").iterdir())) == 2
