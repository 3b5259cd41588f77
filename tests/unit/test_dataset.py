import shutil

import pytest

from wmtp.config import DataConfig, SyntheticDataConfig
from wmtp.data import dataset
from wmtp.data.dataset import prepare_data, synthetic_key
from wmtp.data.records import DataError, fingerprint, read_records, write_records
from wmtp.data.tokenizer import tokenizer_hash


def _cfg(cache, **kw) -> DataConfig:
    return DataConfig(cache_dir=str(cache), synthetic=SyntheticDataConfig(n_problems=20), vocab_size=300, **kw)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    prepare_data(_cfg(path))  # generates data and tokenizer once for the module
    return path


def test_synthetic_layout_and_filtering(cache):
    data = prepare_data(_cfg(cache))
    assert data.data_dir == cache / f"synthetic-{synthetic_key(SyntheticDataConfig(n_problems=20))}"
    for name in ("train", "valid", "test"):
        assert (data.data_dir / f"{name}.jsonl").is_file()
    assert (data.data_dir / "tokenizer-v300" / "tokenizer.json").is_file()
    assert data.train and data.valid and data.test
    assert all(r.is_correct for r in data.train)  # train_on="correct" filters train
    assert {r.is_correct for r in data.valid} == {True, False}  # valid keeps every record (localisation metrics)
    assert {r.is_correct for r in data.test} == {True, False}  # test keeps everything
    assert data.fingerprint == fingerprint(data.train + data.valid)
    assert data.tokenizer_hash == tokenizer_hash(data.tokenizer) and len(data.tokenizer) == 300


def test_second_call_reuses_data_and_tokenizer(cache, monkeypatch):
    files = sorted(p for p in cache.rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    first = prepare_data(_cfg(cache))

    def fail(*args, **kwargs):
        raise AssertionError("regenerated or retrained instead of reusing the cache")

    monkeypatch.setattr(dataset, "generate_splits", fail)
    monkeypatch.setattr(dataset, "train_tokenizer", fail)
    again = prepare_data(_cfg(cache))
    assert (again.fingerprint, again.tokenizer_hash) == (first.fingerprint, first.tokenizer_hash)
    assert {p: p.stat().st_mtime_ns for p in files} == before


def test_train_on_all_keeps_incorrect_and_shares_the_tokenizer(cache):
    correct, everything = prepare_data(_cfg(cache)), prepare_data(_cfg(cache, train_on="all"))
    assert any(not r.is_correct for r in everything.train) and any(not r.is_correct for r in everything.valid)
    assert everything.fingerprint != correct.fingerprint
    assert everything.tokenizer_hash == correct.tokenizer_hash


def test_synthetic_cache_key_follows_the_config():
    assert synthetic_key(SyntheticDataConfig(seed=1)) != synthetic_key(SyntheticDataConfig(seed=2))
    assert synthetic_key(SyntheticDataConfig(seed=1)) == synthetic_key(SyntheticDataConfig(seed=1))


def test_user_directory_without_tokenizer_trains_one_into_the_cache(cache, tmp_path):
    source = prepare_data(_cfg(cache)).data_dir
    for name in ("train", "valid"):  # no test.jsonl: it is optional
        shutil.copy(source / f"{name}.jsonl", tmp_path / f"{name}.jsonl")
    user_cache = tmp_path / "user-cache"
    data = prepare_data(DataConfig(path=str(tmp_path), cache_dir=str(user_cache), vocab_size=300))
    assert data.data_dir == tmp_path and data.test == []
    train = read_records(tmp_path / "train.jsonl")
    assert (user_cache / f"tokenizer-{fingerprint(train)}-v300" / "tokenizer.json").is_file()


def test_user_directory_tokenizer_and_override(cache, tmp_path):
    source = prepare_data(_cfg(cache))
    shutil.copytree(source.data_dir, tmp_path / "data")
    shutil.copytree(source.data_dir / "tokenizer-v300", tmp_path / "data" / "tokenizer")
    data = prepare_data(DataConfig(path=str(tmp_path / "data"), cache_dir=str(tmp_path / "c"), vocab_size=400))
    assert data.tokenizer_hash == source.tokenizer_hash  # the data's own tokenizer, not a new 400-token one
    assert not (tmp_path / "c").exists()
    override = prepare_data(_cfg(cache, tokenizer=str(tmp_path / "data" / "tokenizer")))
    assert override.tokenizer_hash == source.tokenizer_hash


def test_missing_data_file_is_named(tmp_path):
    (tmp_path / "train.jsonl").write_text("")
    with pytest.raises(DataError, match="valid.jsonl does not exist"):
        prepare_data(DataConfig(path=str(tmp_path), cache_dir=str(tmp_path / "c")))
    with pytest.raises(DataError, match="does not exist"):
        prepare_data(DataConfig(path=str(tmp_path / "nowhere"), cache_dir=str(tmp_path / "c")))


def test_no_correct_training_records_is_an_error(cache, tmp_path):
    source = prepare_data(_cfg(cache, train_on="all"))
    incorrect = [r for r in source.train if not r.is_correct]
    write_records(tmp_path / "train.jsonl", incorrect)
    write_records(tmp_path / "valid.jsonl", source.valid)
    with pytest.raises(DataError, match="no train records"):
        prepare_data(DataConfig(path=str(tmp_path), cache_dir=str(tmp_path / "c"), vocab_size=300))
