"""`wmtp data codecontests` → `wmtp data stats` → `wmtp train` with packing and the token cache, and
`wmtp label` argument errors, through the CLI."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from typer.testing import CliRunner

from wmtp.cli import app

runner = CliRunner()


def _row(i: int) -> dict:
    tests = {"input": ["1\n"], "output": ["2\n"]}
    correct = [f"n = int(input())\nprint(n * 2)  # {i}.{j}" for j in range(3)]
    incorrect = [f"print(int(input()) + {j})" for j in range(2 + i % 2)]
    return {
        "name": f"{i}_B. P{i}", "description": f"Problem {i}: print twice the number n.",
        "public_tests": tests, "private_tests": tests, "generated_tests": tests,
        "source": 2, "difficulty": 7 + i % 3,
        "solutions": {"language": [3] * len(correct) + [2], "solution": correct + ["int main(){}"]},
        "incorrect_solutions": {"language": [3] * len(incorrect), "solution": incorrect},
        "time_limit": {"seconds": 1, "nanos": 0}, "memory_limit_bytes": 2**28,
    }


def test_codecontests_stats_and_packed_training(tmp_path):
    parquet = tmp_path / "cc.parquet"
    pq.write_table(pa.Table.from_pylist([_row(i) for i in range(24)]), parquet)
    out = tmp_path / "cc"
    result = runner.invoke(app, ["data", "codecontests", "--source", str(parquet), "--out", str(out),
                                 "--max-records", "100", "--valid-fraction", "0.2"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["records"] == 100 and report["records_before_subsample"] == 24 * 3 + 12 * 2 + 12 * 3
    assert 0 < report["splits"]["train"]["correct_ratio"] < 1

    common = [f"data.path={out}", f"data.cache_dir={tmp_path / 'cache'}", "data.vocab_size=300", "data.max_len=400"]
    result = runner.invoke(app, ["data", "stats", *common, "--out", str(tmp_path / "stats")])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    assert stats["splits"]["train"]["records"] == report["splits"]["train"]["records"]
    assert set(stats["splits"]["train"]["by_difficulty"]) <= {"A", "B", "C"}
    assert (tmp_path / "stats" / "token_lengths.png").is_file()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = runner.invoke(app, ["train", *common, f"run_dir={tmp_path / 'run'}", "data.pack=true",
                                     "data.token_cache=true", "data.train_on=all", "model.d_model=32",
                                     "model.n_layers=2", "model.n_heads=2", "model.n_attn_heads=4",
                                     "train.batch_size=2", "train.max_steps=3", "train.eval_every=3",
                                     "train.ckpt_every=3", "train.progress=false"])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert evals and all(v == v for v in evals[-1].values() if isinstance(v, float))  # finite, not NaN
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    # packed: fewer training rows than train records
    assert meta["n_train_records"] < report["splits"]["train"]["records"]
    assert len(list((tmp_path / "cache" / "tokens").iterdir())) == 2  # train and valid entries


def test_label_argument_errors_exit_2(tmp_path):
    result = runner.invoke(app, ["label", "--bench", "hellaswag", "--out", str(tmp_path), "--run", str(tmp_path)])
    assert result.exit_code == 2 and "cannot label" in result.output
    result = runner.invoke(app, ["label", "--bench", "mbpp", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "exactly one of" in result.output


def test_codecontests_bad_options_exit_2(tmp_path):
    result = runner.invoke(app, ["data", "codecontests", "--source", str(tmp_path / "missing"), "--out",
                                 str(tmp_path / "o"), "--languages", "cobol"])
    assert result.exit_code == 2
