"""`wmtp label`: sample from a tiny random model, grade in the sandbox, write records; resume by problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from wmtp.config import ModelConfig
from wmtp.data.records import DataError, read_records
from wmtp.data.tokenizer import train_tokenizer
from wmtp.eval.benchmarks import mbpp
from wmtp.eval.generate import SamplingConfig
from wmtp.eval.label import LabelRequest, grade, label, to_records
from wmtp.model.checkpoints import save_model_dir
from wmtp.model.mtp import MTPModel

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="the sandbox (bubblewrap) is not installed")

TASKS = [
    {"task_id": 11, "text": "Write a function to add two numbers.", "code": "def add(a, b):\n    return a + b",
     "test_setup_code": "", "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"], "challenge_test_list": []},
    {"task_id": 12, "text": "Write a function to double a number.", "code": "def double(x):\n    return 2 * x",
     "test_setup_code": "", "test_list": ["assert double(4) == 8"], "challenge_test_list": []},
    {"task_id": 13, "text": "Write a function to negate a number.", "code": "def neg(x):\n    return -x",
     "test_setup_code": "", "test_list": ["assert neg(3) == -3"], "challenge_test_list": []},
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("label")
    data = root / "mbpp.jsonl"
    data.write_text("".join(json.dumps(t) + "\n" for t in TASKS))
    tok = train_tokenizer([t["text"] + t["code"] + " ".join(t["test_list"]) for t in TASKS] * 20, 300)
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, n_attn_heads=4, max_seq_len=256)
    model = MTPModel.from_config(cfg, vocab_size=len(tok), pad_id=tok.pad_token_id, bos_id=tok.bos_token_id,
                                 eos_id=tok.eos_token_id)
    save_model_dir(model, root / "model", tok)
    return root, data


def _request(data: Path, **kw) -> LabelRequest:
    sampling = SamplingConfig(temperature=1.0, n=2, max_new_tokens=8, seed=kw.pop("seed", 0))
    return LabelRequest(bench="mbpp", sampling=sampling, data_file=str(data), n_shot=0, workers=2, chunk_problems=2,
                        progress=False, **kw)


def test_grading_labels_correct_and_incorrect_completions_in_the_sandbox(setup):
    _, data = setup
    problems = mbpp.load_mbpp(data, n_shot=0)
    completions = [[t["code"], t["code"].replace("return", "return 1 +")] for t in TASKS]
    passed = grade(_request(data), problems, completions)
    assert passed == [[True, False]] * 3
    records = to_records("mbpp", problems, completions, passed)
    assert [(r.problem_id, r.is_correct) for r in records] == [(str(t["task_id"]), ok) for t in TASKS
                                                               for ok in (True, False)]
    assert records[0].prompt == problems[0].prompt and records[0].completion == TASKS[0]["code"]


def test_label_writes_records_and_resumes_by_problem(setup, tmp_path):
    root, data = setup
    out = tmp_path / "labels"
    first = label(_request(data), out_dir=out, run_dir=root / "model")
    assert first["problems"] == 3 and first["problems_sampled_now"] == 3 and first["records"] == 6
    records = read_records(out / "records.jsonl")
    assert [r.problem_id for r in records] == ["11", "11", "12", "12", "13", "13"]
    assert len({r.id for r in records}) == 6 and all(r.source == "label/mbpp" for r in records)
    # Every label is what the sandbox says about that very completion.
    problems = {p.problem_id: p for p in mbpp.load_mbpp(data, n_shot=0)}
    regraded = grade(_request(data), [problems[r.problem_id] for r in records], [[r.completion] for r in records])
    assert [r.is_correct for r in records] == [ok[0] for ok in regraded]
    assert first["correct_ratio"] == sum(r.is_correct for r in records) / 6

    shards = sorted((out / "shards").glob("*.jsonl"))
    assert len(shards) == 2  # chunks of 2 problems
    kept = shards[0].read_bytes()
    again = label(_request(data), out_dir=out, run_dir=root / "model")
    assert again["problems_sampled_now"] == 0 and again["problems_reused"] == 3
    assert read_records(out / "records.jsonl") == records

    shards[1].unlink()  # as if the run had died before its last chunk
    resumed = label(_request(data), out_dir=out, run_dir=root / "model")
    assert resumed["problems_sampled_now"] == 1 and resumed["records"] == 6
    assert shards[0].read_bytes() == kept
    assert [r.id for r in read_records(out / "records.jsonl")] == [r.id for r in records]


def test_another_request_into_the_same_directory_is_refused(setup, tmp_path):
    root, data = setup
    label(_request(data, limit=1), out_dir=tmp_path / "x", run_dir=root / "model")
    with pytest.raises(DataError, match="another request"):
        label(_request(data, limit=1, seed=1), out_dir=tmp_path / "x", run_dir=root / "model")


def test_label_cli(setup, tmp_path):
    from typer.testing import CliRunner

    from wmtp.cli import app

    root, data = setup
    result = CliRunner().invoke(app, [
        "label", "--bench", "mbpp", "--data-file", str(data), "--n-shot", "0", "--run", str(root / "model"),
        "--n", "2", "--temperature", "1.0", "--max-new-tokens", "4", "--limit", "2", "--out", str(tmp_path / "o"),
        "--workers", "2", "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["records"] == 4 and summary["problems_sampled_now"] == 2
    assert len(read_records(tmp_path / "o" / "records.jsonl")) == 4


def test_math_benchmarks_are_labelled_by_their_answer(tmp_path):
    from wmtp.eval.benchmarks import gsm8k

    data = tmp_path / "gsm8k.jsonl"
    rows = [{"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"},
            {"question": "What is 10 * 10?", "answer": "#### 100"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    problems = gsm8k.load_gsm8k(data, n_shot=0)
    req = LabelRequest(bench="gsm8k", sampling=SamplingConfig(temperature=1.0, n=2), data_file=str(data))
    completions = [[" 2 + 3 = 5\n#### 5", " It is 6\n#### 6"], [" #### 100", " #### 1,000"]]
    records = to_records("gsm8k", problems, completions, grade(req, problems, completions))
    assert [r.is_correct for r in records] == [True, False, True, False]
    assert all(r.source == "label/gsm8k" and r.prompt == problems[i // 2].prompt for i, r in enumerate(records))
