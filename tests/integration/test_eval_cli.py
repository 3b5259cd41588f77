"""`wmtp eval` and `wmtp bench sandbox` end to end, in-process through the CLI.

A tiny model is trained for a few dozen steps on the embedded default (shrunk), then evaluated from its run
directory; an HF-format model directory is evaluated through --hf-model on hand-made GSM8K and HellaSwag rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from wmtp.cli import app
from wmtp.config import ModelConfig, load_config
from wmtp.data.tokenizer import train_tokenizer
from wmtp.model.mtp import MTPModel
from wmtp.train.run import train_run

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, one_thread) -> Path:
    root = tmp_path_factory.mktemp("eval-cli")
    cfg = load_config(None, [
        f"run_dir={root}/run", f"data.cache_dir={root}/cache", "data.synthetic.n_problems=30",
        "data.synthetic.test_fraction=0.1", "data.vocab_size=300",
        "model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.n_attn_heads=4", "model.max_seq_len=512",
        "train.batch_size=4", "train.max_steps=24", "train.eval_every=24", "train.ckpt_every=24",
        "train.progress=false", "optim.warmup_steps=3",
    ])
    train_run(cfg)
    return Path(cfg.run_dir)


def invoke(*args: str):
    return runner.invoke(app, ["eval", *args])


def test_eval_synthetic_with_ten_samples_gives_pass_at_1_and_10(run_dir):
    result = invoke("--run", str(run_dir), "--bench", "synthetic", "--n", "10", "--k", "1,10,100",
                    "--temperature", "0.8", "--top-p", "0.95", "--max-new-tokens", "48", "--no-progress")
    assert result.exit_code == 0, result.output
    out = json.loads((run_dir / "eval" / "synthetic.json").read_text())
    assert set(out["summary"]) == {"pass@1", "pass@10"}  # k=100 > n is dropped
    rows = out["per_problem"]
    assert out["benchmark"] == "synthetic" and out["n_problems"] == len(rows) == 3
    assert all(r["n"] == 10 and len(r["passed"]) == 10 and r["c"] == sum(r["passed"]) for r in rows)
    assert out["summary"]["pass@1"] == pytest.approx(sum(r["c"] / 10 for r in rows) / 3)
    assert 0.0 <= out["summary"]["pass@1"] <= out["summary"]["pass@10"] <= 1.0
    assert out["sampling"]["n"] == 10 and out["sampling"]["temperature"] == 0.8 and out["sampling"]["top_p"] == 0.95
    assert out["sandbox"]["unsafe"] is False and out["sandbox"]["isolation"] == "bubblewrap"
    assert out["model"]["run_dir"] == str(run_dir) and out["data"] == {"run_test_split": str(run_dir)}
    test_ids = {json.loads(line)["problem_id"]
                for line in (Path(json.loads((run_dir / "meta.json").read_text())["data_dir"]) / "test.jsonl")
                .read_text().splitlines()}
    assert {r["problem_id"] for r in rows} == test_ids
    last_line = json.loads(result.stdout.strip().splitlines()[-1])
    assert last_line["synthetic"]["summary"] == out["summary"]


def test_eval_unsafe_and_limit_reach_the_result(run_dir, tmp_path):
    with pytest.warns(RuntimeWarning, match="unsafe"):
        result = invoke("--run", str(run_dir), "--bench", "synthetic", "--limit", "1", "--unsafe",
                        "--max-new-tokens", "16", "--out", str(tmp_path), "--no-progress")
    assert result.exit_code == 0, result.output
    assert "WITHOUT isolation" in result.output
    out = json.loads((tmp_path / "synthetic.json").read_text())
    assert out["n_problems"] == 1 and out["limit"] == 1 and set(out["summary"]) == {"pass@1"}
    assert out["sandbox"]["unsafe"] is True and out["sandbox"]["isolation"] == "none (unsafe)"


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("hf-model")
    texts = ["Question: What is 2 + 3?\nAnswer: 2 + 3 = 5\n#### 5", "The cat sat on the mat. A dog ran."] * 20
    tokenizer = train_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    model = MTPModel.from_config(
        ModelConfig(d_model=32, n_layers=2, n_heads=1, n_attn_heads=4, max_seq_len=256), vocab_size=len(tokenizer),
        pad_id=tokenizer.pad_token_id, bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id)
    model.trunk.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_eval_an_hf_model_on_gsm8k_and_hellaswag_files(hf_model_dir, tmp_path):
    gsm = tmp_path / "gsm8k.jsonl"
    gsm.write_text("".join(json.dumps({"question": q, "answer": f"#### {a}"}) + "\n"
                           for q, a in (("What is 2 + 3?", 5), ("What is 4 + 4?", 8))))
    result = invoke("--hf-model", str(hf_model_dir), "--out", str(tmp_path / "out"), "--bench", "gsm8k",
                    "--data-file", str(gsm), "--n-shot", "0", "--max-new-tokens", "8", "--no-progress")
    assert result.exit_code == 0, result.output
    out = json.loads((tmp_path / "out" / "gsm8k.json").read_text())
    assert [r["problem_id"] for r in out["per_problem"]] == ["gsm8k/0", "gsm8k/1"]
    assert [r["reference"] for r in out["per_problem"]] == ["5", "8"] and set(out["summary"]) == {"pass@1"}
    assert out["model"] == {"hf_model": str(hf_model_dir)} and out["data"]["file"] == str(gsm)
    assert "sandbox" not in out and len(out["data"]["sha256"]) == 64

    hella = tmp_path / "hellaswag.jsonl"
    hella.write_text("".join(json.dumps({"ind": i, "ctx": "The cat sat", "label": i % 4,
                                         "endings": ["on the mat.", "in a box.", "quietly.", "down."]}) + "\n"
                             for i in range(3)))
    result = invoke("--hf-model", str(hf_model_dir), "--out", str(tmp_path / "out"), "--bench", "hellaswag",
                    "--data-file", str(hella), "--no-progress")
    assert result.exit_code == 0, result.output
    out = json.loads((tmp_path / "out" / "hellaswag.json").read_text())
    assert set(out["summary"]) == {"acc", "acc_norm"} and out["n_problems"] == 3
    preds = {r["pred"] for r in out["per_problem"]}
    assert len(preds) == 1 and out["summary"]["acc"] == pytest.approx(1 / 3)  # same context: same choice


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bench", "nope", "--run", "RUN"], "unknown benchmark"),
        (["--bench", "synthetic", "--run", "RUN", "--n", "4"], "identical samples"),
        (["--bench", "synthetic"], "exactly one of --run"),
        (["--bench", "gsm8k,math", "--run", "RUN", "--data-file", "x.jsonl"], "single --bench"),
        (["--bench", "mbpp", "--run", "RUN"], "exactly one of a data file"),
        (["--bench", "gsm8k", "--run", "RUN", "--data-file", "MISSING"], "does not exist"),
        (["--bench", "synthetic", "--hf-model", "some/model"], "--out"),
        (["--bench", "humaneval", "--run", "NOMODEL"], "has no final model"),
    ],
)
def test_eval_user_errors_are_one_message_and_exit_2(args, message, tmp_path):
    substitutions = {"RUN": str(tmp_path), "MISSING": str(tmp_path / "absent.jsonl"),
                     "NOMODEL": str(tmp_path / "empty-run")}
    result = invoke(*[substitutions.get(a, a) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_bench_sandbox_prints_json_last_with_the_humaneval_wall_time():
    result = runner.invoke(app, ["bench", "sandbox", "--n", "3"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["n"] == 3 and out["sandboxed"]["throughput_per_s"] > 0 and out["unsafe"]["throughput_per_s"] > 0
    canonical = out["humaneval_canonical"]
    assert canonical["n"] == canonical["passed"] == 164 and canonical["wall_s"] > 0
