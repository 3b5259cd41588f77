"""The reference-CE cache: keyed (stale keys refused), sharded, resumable, and read back exactly."""

from __future__ import annotations

import json
import random

import pytest
import torch

from wmtp.data.collate import EncodedRecord
from wmtp.weighting.ref_cache import (
    CacheKey,
    RefCacheError,
    attach_ref_ce,
    cache_dir,
    encoded_fingerprint,
    read_cache,
    write_cache,
)

KEY = CacheKey(data="d" * 16, tokenizer="t" * 16, reference="wmtp:" + "r" * 16)


def make_records(n=21, seed=0):
    rng = random.Random(seed)
    return [
        EncodedRecord(f"r{i}", [1] + [rng.randint(3, 50) for _ in range(rng.randint(3, 12))] + [2], 2, True)
        for i in range(n)
    ]


class CountingScorer:
    """A deterministic stand-in for a reference model: ref_ce[j] = f(x_j, x_{j-1}), 0 at j=0 and padding."""

    def __init__(self):
        self.rows = 0

    def __call__(self, input_ids, attention_mask):
        self.rows += input_ids.shape[0]
        out = torch.zeros(input_ids.shape)
        out[:, 1:] = input_ids[:, 1:] * 0.1 + input_ids[:, :-1] * 0.01
        return torch.where(attention_mask & attention_mask.roll(1, dims=1), out, 0.0) * (torch.arange(out.shape[1]) > 0)


def expected(record):
    ids = record.input_ids
    return [0.0] + [ids[j] * 0.1 + ids[j - 1] * 0.01 for j in range(1, len(ids))]


def write(records, directory, scorer=None, key=KEY, shard_records=5):
    return write_cache(records, scorer or CountingScorer(), directory=directory, key=key, pad_id=0,
                       shard_records=shard_records, batch_size=3)  # fmt: skip


def test_values_round_trip_in_order(tmp_path):
    records = make_records()
    done = write(records, tmp_path / "c")
    assert done == {"computed": [0, 1, 2, 3, 4], "skipped": []}
    values = read_cache(tmp_path / "c", KEY, records)
    assert len(values) == len(records)
    for record, row in zip(records, values):
        assert row == pytest.approx(expected(record), abs=1e-5) and row[0] == 0.0
    with_ref = attach_ref_ce(records, values)
    assert [r.ref_ce for r in with_ref] == values and records[0].ref_ce is None


def test_resume_recomputes_only_the_missing_or_torn_shards(tmp_path):
    records, directory = make_records(), tmp_path / "c"
    write(records, directory)
    before = read_cache(directory, KEY, records)
    mtimes = {p.name: p.stat().st_mtime_ns for p in directory.glob("shard_*")}
    (directory / "shard_00002.safetensors").unlink()
    (directory / ".shard_00002.safetensors.x.tmp").write_bytes(b"half a shard")  # a killed write's leftover
    scorer = CountingScorer()
    assert write(records, directory, scorer) == {"computed": [2], "skipped": [0, 1, 3, 4]}
    assert scorer.rows == 5  # one shard's records, nothing else
    assert read_cache(directory, KEY, records) == before
    for name, mtime in mtimes.items():
        if name != "shard_00002.safetensors":
            assert (directory / name).stat().st_mtime_ns == mtime, name
    # a truncated shard is unreadable: recomputed too
    path = directory / "shard_00004.safetensors"
    path.write_bytes(path.read_bytes()[:40])
    assert write(records, directory)["computed"] == [4]
    assert read_cache(directory, KEY, records) == before


def test_an_unfinished_cache_is_refused(tmp_path):
    records, directory = make_records(), tmp_path / "c"
    write(records, directory)
    (directory / "index.json").unlink()  # scoring was killed before the index: not a usable cache
    with pytest.raises(RefCacheError, match=f"{KEY.digest}.*incomplete.*score-ref"):
        read_cache(directory, KEY, records)


def test_a_corrupt_shard_is_refused_on_read(tmp_path):
    records, directory = make_records(), tmp_path / "c"
    write(records, directory)
    path = directory / "shard_00001.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # a flipped bit in the values: still loadable, but not what was written
    path.write_bytes(bytes(data))
    with pytest.raises(RefCacheError, match="shard_00001.*corrupt"):
        read_cache(directory, KEY, records)
    assert write(records, directory)["computed"] == [1]  # score-ref repairs it (the index knew its hash)
    for record, row in zip(records, read_cache(directory, KEY, records)):
        assert row == pytest.approx(expected(record), abs=1e-5)


@pytest.mark.parametrize("component", ["data", "tokenizer", "reference"])
def test_a_changed_component_makes_the_cache_stale(tmp_path, component):
    records, root = make_records(), tmp_path / "ref"
    write(records, cache_dir(root, KEY))
    changed = CacheKey(**{**KEY.components(), component: "x" * 16})
    assert changed.digest != KEY.digest
    with pytest.raises(RefCacheError) as err:
        read_cache(cache_dir(root, changed), changed, records)
    message = str(err.value)
    assert changed.digest in message and "score-ref" in message and f"differs in {component}" in message
    # the same key in a directory written for another key (a cache copied or renamed by hand)
    with pytest.raises(RefCacheError, match=f"stale.*expected key {changed.digest}"):
        read_cache(cache_dir(root, KEY), changed, records)


def test_changed_records_are_refused(tmp_path):
    records, directory = make_records(), tmp_path / "c"
    write(records, directory)
    with pytest.raises(RefCacheError, match="20 records|expected 20"):
        read_cache(directory, KEY, records[:20])
    other = make_records(seed=1)
    with pytest.raises(RefCacheError, match="does not match"):
        read_cache(directory, KEY, other)


def test_encoded_fingerprint_follows_ids_and_tokens():
    records = make_records()
    assert encoded_fingerprint(records) == encoded_fingerprint(make_records())
    truncated = [EncodedRecord(r.id, r.input_ids[:-1], r.n_prompt, r.is_correct) for r in records]
    assert encoded_fingerprint(truncated) != encoded_fingerprint(records)
    renamed = [EncodedRecord(r.id + "x", r.input_ids, r.n_prompt, r.is_correct) for r in records]
    assert encoded_fingerprint(renamed) != encoded_fingerprint(records)


def test_index_names_its_key_and_components(tmp_path):
    write(make_records(), tmp_path / "c")
    index = json.loads((tmp_path / "c" / "index.json").read_text())
    assert index["key"] == KEY.digest and index["components"] == KEY.components()
    assert [s["file"] for s in index["shards"]] == [f"shard_0000{i}.safetensors" for i in range(5)]
