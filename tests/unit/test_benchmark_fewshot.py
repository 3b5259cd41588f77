"""The test and few-shot rows of a few-shot benchmark (GSM8K, MATH)."""

import json

import pytest

from wmtp.data.records import DataError
from wmtp.eval.benchmarks import fewshot


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def files(tmp_path):
    return _jsonl(tmp_path / "test.jsonl", [{"q": 1}, {"q": 2}]), _jsonl(tmp_path / "train.jsonl", [{"q": 9}])


def test_rows_and_shots_from_files(files):
    test, train = files
    common = {"dataset": None, "split": None, "fewshot_file": train}
    assert fewshot.test_and_fewshot_rows("b", test, n_shot=1, **common) == ([{"q": 1}, {"q": 2}], [{"q": 9}])
    assert fewshot.test_and_fewshot_rows("b", test, n_shot=0, **common)[1] == []
    assert fewshot.test_and_fewshot_rows("b", test, n_shot=1, **{**common, "fewshot_file": None})[1] is None


def test_hub_dataset_gives_its_fewshot_split_only_when_asked(monkeypatch, files):
    calls = []
    monkeypatch.setattr(fewshot, "rows_from", lambda **kw: [{"q": 0}])
    monkeypatch.setattr(fewshot, "hub_rows", lambda name, *, split: calls.append((name, split)) or [{"q": 5}])
    common = {"dataset": "org/set", "split": None, "n_shot": 2, "fewshot_file": None}
    assert fewshot.test_and_fewshot_rows("b", None, **common, hub_fewshot_split="train") == ([{"q": 0}], [{"q": 5}])
    assert fewshot.test_and_fewshot_rows("b", None, **common) == ([{"q": 0}], None)
    assert calls == [("org/set", "train")]


def test_exactly_one_test_source(files):
    test, _ = files
    with pytest.raises(DataError, match="exactly one"):
        fewshot.test_and_fewshot_rows("b", test, dataset="org/set", split=None, n_shot=0, fewshot_file=None)
