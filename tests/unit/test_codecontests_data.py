"""CodeContests → records, on a small parquet file in the hub schema that the test writes."""

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wmtp.data.codecontests import CodeContestsConfig, iter_rows, prepare_codecontests, problem_records, prompt
from wmtp.data.records import DataError, read_records
from wmtp.eval.benchmarks import codecontests as cc_bench

PY2, CPP, PY3, JAVA = 1, 2, 3, 4


def _tests(n):
    return {"input": [f"{i}\n" for i in range(n)], "output": [f"{2 * i}\n" for i in range(n)]}


def _row(i, correct, incorrect, *, difficulty=1, source=2):
    """A row in the hub schema; correct / incorrect: lists of (language id, code)."""
    return {
        "name": f"{i}_A. Problem {i}",
        "description": f"Read n and print 2n. Problem {i}.",
        "public_tests": _tests(1),
        "private_tests": _tests(2),
        "generated_tests": _tests(3),
        "source": source,
        "difficulty": difficulty,
        "solutions": {"language": [lang for lang, _ in correct], "solution": [code for _, code in correct]},
        "incorrect_solutions": {"language": [lang for lang, _ in incorrect],
                                "solution": [code for _, code in incorrect]},
        "cf_contest_id": i,
        "cf_index": "A",
        "cf_points": 500.0,
        "cf_rating": 800,
        "cf_tags": ["math"],
        "is_description_translated": False,
        "untranslated_description": "",
        "time_limit": {"seconds": 2, "nanos": 0},
        "memory_limit_bytes": 256 * 2**20,
        "input_file": "",
        "output_file": "",
    }


def _rows(n_problems=30):
    rows = []
    for i in range(n_problems):
        correct = [(PY3, f"n = int(input())\nprint(2 * n)  # v{j}\n") for j in range(3)]
        correct += [(CPP, "int main() { return 0; }"), (PY2, "print 2 * input()")]
        incorrect = [(PY3, f"print(int(input()) + {j})") for j in range(2)] + [(JAVA, "class A {}")]
        rows.append(_row(i, correct, incorrect, difficulty=1 + i % 3, source=2 if i % 2 else 1))
    # problem 0: a duplicate up to whitespace (CRLF, trailing spaces) and a solution that is also "incorrect"
    rows[0]["solutions"]["language"] += [PY3, PY3]
    rows[0]["solutions"]["solution"] += ["n = int(input())\r\nprint(2 * n)  # v0   \r\n\r\n", "print('both')"]
    rows[0]["incorrect_solutions"]["language"].append(PY3)
    rows[0]["incorrect_solutions"]["solution"].append("print('both')\n")
    return rows


@pytest.fixture()
def parquet(tmp_path):
    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(_rows()), path, row_group_size=7)
    return path


def test_problem_records_languages_labels_dedup_and_prompt():
    cfg = CodeContestsConfig(max_records=None)
    counts = Counter()
    records = problem_records(_rows()[0], cfg, counts)
    assert counts["duplicates"] == 2 and counts["conflicting"] == 1  # the CRLF copy; 'both' in both lists
    assert counts["other_language"] == 3  # cpp, python2, java
    assert sorted((r.is_correct, r.completion) for r in records) == [
        (False, "print(int(input()) + 0)\n```"),
        (False, "print(int(input()) + 1)\n```"),
        (True, "n = int(input())\nprint(2 * n)  # v0\n```"),
        (True, "n = int(input())\nprint(2 * n)  # v1\n```"),
        (True, "n = int(input())\nprint(2 * n)  # v2\n```"),
    ]
    r = records[0]
    assert r.problem_id == "0_A. Problem 0" and r.source == "codecontests/codechef" and r.difficulty == "EASY"
    # Python 3 prompts are exactly what `wmtp eval --bench codecontests` shows the model.
    contest = cc_bench.parse_contest(_rows()[0])
    assert r.prompt == cc_bench.prompt(contest) == prompt(contest.description, "python3")
    cpp = problem_records(_rows()[0], CodeContestsConfig(languages=["cpp"]), counts)
    assert [x.completion for x in cpp] == ["int main() { return 0; }\n```"] and cpp[0].prompt.endswith("```cpp\n")


def test_max_per_problem_caps_each_label():
    records = problem_records(_rows()[1], CodeContestsConfig(max_per_problem=1), Counter())
    assert sorted(r.is_correct for r in records) == [False, True]


def test_prepare_splits_by_problem_subsamples_and_reports(parquet, tmp_path):
    cfg = CodeContestsConfig(source=str(parquet), max_records=80, valid_fraction=0.2, test_fraction=0.1, seed=1)
    report = prepare_codecontests(cfg, tmp_path / "out")
    splits = {name: read_records(tmp_path / "out" / f"{name}.jsonl") for name in ("train", "valid", "test")}
    problems = {name: {r.problem_id for r in rs} for name, rs in splits.items()}
    assert not (problems["train"] & problems["valid"]) and not (problems["train"] & problems["test"])
    assert not (problems["valid"] & problems["test"]) and all(problems.values())
    all_records = [r for rs in splits.values() for r in rs]
    assert len(all_records) == report["records"] == 80
    assert len({r.id for r in all_records}) == 80
    # 30 problems × (3 correct + 2 incorrect) python3 texts; problem 0's duplicate and conflicting text are dropped.
    assert report["records_before_subsample"] == 30 * 5
    assert report["problems_read"] == 30 and report["duplicates_dropped"] == 2 and report["conflicting_dropped"] == 1
    for name, rs in splits.items():
        assert report["splits"][name]["records"] == len(rs)
        assert report["splits"][name]["correct_ratio"] == pytest.approx(sum(r.is_correct for r in rs) / len(rs))
    assert json.loads((tmp_path / "out" / "prepare.json").read_text())["records"] == 80
    # Fixed seed: the same records; another seed: another subsample.
    again = prepare_codecontests(cfg, tmp_path / "again")
    assert again["splits"] == report["splits"]
    assert read_records(tmp_path / "again" / "train.jsonl") == splits["train"]
    other = prepare_codecontests(cfg.model_copy(update={"seed": 2}), tmp_path / "other")
    other_ids = {r.id for name in other["splits"] for r in read_records(tmp_path / "other" / f"{name}.jsonl")}
    assert other_ids != {r.id for r in all_records}


def test_sample_does_not_depend_on_row_order(parquet, tmp_path):
    reversed_path = tmp_path / "rev" / "train.parquet"
    reversed_path.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(_rows()[::-1]), reversed_path)
    a = prepare_codecontests(CodeContestsConfig(source=str(parquet), max_records=50), tmp_path / "a")
    b = prepare_codecontests(CodeContestsConfig(source=str(reversed_path), max_records=50), tmp_path / "b")
    assert a["splits"] == b["splits"]
    assert read_records(tmp_path / "a" / "train.jsonl") == read_records(tmp_path / "b" / "train.jsonl")


def test_reads_hub_layout_directory_and_arrow_files(parquet, tmp_path):
    hub = tmp_path / "hub" / "data"
    hub.mkdir(parents=True)
    table = pa.Table.from_pylist(_rows())
    pq.write_table(table.slice(0, 10), hub / "train-00000-of-00002.parquet")
    pq.write_table(table.slice(10), hub / "train-00001-of-00002.parquet")
    pq.write_table(table.slice(0, 3), hub / "valid-00000-of-00001.parquet")
    assert len(list(iter_rows(str(tmp_path / "hub"), "train"))) == 30
    assert len(list(iter_rows(str(tmp_path / "hub"), "valid"))) == 3
    arrow = tmp_path / "disk" / "train"
    arrow.mkdir(parents=True)
    with pa.OSFile(str(arrow / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    rows = list(iter_rows(str(tmp_path / "disk"), "train"))
    assert [r["name"] for r in rows] == [r["name"] for r in _rows()]
    assert set(rows[0]) == {"name", "description", "source", "difficulty", "solutions", "incorrect_solutions"}
    with pytest.raises(DataError, match="split 'test'"):
        list(iter_rows(str(tmp_path / "hub"), "test"))


def test_bad_rows_and_missing_columns_are_data_errors(tmp_path):
    bad = _rows(1)
    bad[0]["solutions"]["language"].append(PY3)  # one more language than solutions
    with pytest.raises(DataError, match="languages but"):
        problem_records(bad[0], CodeContestsConfig(), Counter())
    path = tmp_path / "x.parquet"
    pq.write_table(pa.Table.from_pylist([{"name": "a", "description": "b"}]), path)
    with pytest.raises(DataError, match="lacks columns"):
        list(iter_rows(str(path), "train"))
