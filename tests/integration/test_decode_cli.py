"""`wmtp generate [--speculative]` and `wmtp bench decode` end to end, in-process through the CLI.

The run directory is hand-made (a random tiny MTP model, a tokenizer, a test split named by meta.json), so
these check the plumbing; exactness and acceptance are tests/unit/test_speculative.py's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from wmtp.cli import app
from wmtp.config import ModelConfig
from wmtp.data.records import Record, write_records
from wmtp.data.tokenizer import train_tokenizer
from wmtp.model.checkpoints import save_model_dir
from wmtp.model.mtp import MTPModel

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")
PROMPTS = ["def add(a, b):\n", "def neg(x):\n", "def twice(s):\n", "def first(xs):\n"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("decode-cli")
    completions = ["    return a + b\n", "    return -x\n", "    return s + s\n", "    return xs[0]\n"]
    tokenizer = train_tokenizer([p + c for p, c in zip(PROMPTS, completions)] * 5, vocab_size=300)
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=3, n_attn_heads=4, max_seq_len=256, init_std=0.1)
    model = MTPModel.from_config(cfg, vocab_size=len(tokenizer), pad_id=tokenizer.pad_token_id,
                                 bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id)  # fmt: skip
    run = root / "run"
    save_model_dir(model, run / "model", tokenizer)
    data = root / "data"
    data.mkdir()
    write_records(data / "test.jsonl", [
        Record(id=f"p{i}/0", problem_id=f"p{i}", prompt=p, completion=c, is_correct=True, source="hand")
        for i, (p, c) in enumerate(zip(PROMPTS, completions))
    ])  # fmt: skip
    (run / "meta.json").write_text(json.dumps({"data_dir": str(data)}))
    return run


def test_generate_speculative_prints_the_greedy_completion_and_stats(run_dir):
    args = ["generate", "--run", str(run_dir), "--prompt", PROMPTS[0], "--max-new-tokens", "12"]
    plain = runner.invoke(app, args)
    spec = runner.invoke(app, [*args, "--speculative"])
    assert plain.exit_code == 0 and spec.exit_code == 0, plain.output + spec.output
    assert plain.stdout == spec.stdout and plain.stdout.strip()
    assert "speculative" not in plain.stderr
    stats = json.loads(spec.stderr.split("speculative:", 1)[1])
    assert stats["n_tokens"] >= 1 and stats["n_forwards"] >= 1
    assert set(stats["acceptance_per_head"]) == {"2", "3"}


def test_bench_decode_prints_json_last(run_dir):
    result = runner.invoke(app, ["bench", "decode", "--run", str(run_dir), "--prompts", "3", "--max-new-tokens", "8",
                                 "--repeats", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    variants = ("greedy", "speculative", "sample", "speculative_sample", "hf_generate", "hf_sample")
    for name in variants:
        v = out[name]
        assert len(v["wall_s"]) == len(v["cpu_s"]) == len(v["n_tokens"]) == 2  # raw times, one per repeat
        assert v["tokens_per_s_spread"][0] <= v["tokens_per_s"] <= v["tokens_per_s_spread"][1]
    for name in ("speculative", "speculative_sample"):
        assert out[name]["tokens_per_forward"] >= 1.0
        assert set(out[name]["acceptance_per_head"]) == {"2", "3"}
    assert set(out["speedups"]) == {"greedy_vs_kv", "greedy_vs_hf", "sampled_vs_kv", "sampled_vs_hf"}
    assert out["speedup"] == pytest.approx(out["speculative"]["tokens_per_s"] / out["greedy"]["tokens_per_s"])
    assert out["identical_outputs"] is True and out["identical_to_hf_generate"] is True
    assert out["greedy"]["n_tokens"] == out["speculative"]["n_tokens"] == out["hf_generate"]["n_tokens"]
    assert out["config"]["n_prompts"] == 3 and out["config"]["threads"] == 1 and out["config"]["repeats"] == 2


def test_bench_decode_with_fewer_draft_heads_and_no_hf(run_dir):
    args = ["bench", "decode", "--run", str(run_dir), "--prompts", "2", "--max-new-tokens", "6", "--repeats", "1"]
    out = json.loads(runner.invoke(app, [*args, "--n-draft", "1", "--no-hf-generate"]).stdout.strip().splitlines()[-1])
    assert set(out["speculative"]["acceptance_per_head"]) == {"2"} and out["config"]["n_draft"] == 1
    assert set(out["speedups"]) == {"greedy_vs_kv", "sampled_vs_kv"} and "hf_generate" not in out
    assert runner.invoke(app, [*args, "--n-draft", "3"]).exit_code == 2  # heads 2..3 only: a user error


def test_missing_run_is_a_user_error(tmp_path):
    for args in (["generate", "--run", str(tmp_path / "nope"), "--prompt", "x"],
                 ["bench", "decode", "--run", str(tmp_path / "nope")]):  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        assert "nope" in result.output and "Traceback" not in result.output
