"""The group weighting end to end: trained through the CLI with packing and gradient accumulation, swept with its
shuffled control and reported with the localisation table; accumulation equals one large batch."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from wmtp.cli import app
from wmtp.config import load_config
from wmtp.data.collate import EncodedRecord
from wmtp.model.mtp import MTPModel
from wmtp.train.run_dir import read_metrics
from wmtp.train.trainer import Trainer
from wmtp.weighting.group import GroupWeight

pytestmark = pytest.mark.usefixtures("one_thread")

runner = CliRunner()
TINY = ["data.synthetic.n_problems=20", "data.vocab_size=300", "model.d_model=32", "model.n_layers=2",
        "model.n_attn_heads=2", "model.n_heads=2", "train.batch_size=4", "train.max_steps=4", "train.eval_every=2",
        "train.ckpt_every=4", "train.progress=false", "data.train_on=all"]


def test_group_trains_packed_with_accumulation_then_sweeps_and_reports(tmp_path):
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["train", *TINY, cache, f"run_dir={run_dir}", "weighting.name=group",
                                 "data.pack=true", "train.grad_accum=2"])
    assert result.exit_code == 0, result.output
    rows = read_metrics(run_dir)
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert len(train_rows) == 4 and all(r["w_std"] > 0 for r in train_rows)  # not uniform: group weights used
    assert all("loc_auc_incorrect" in r for r in rows if r["kind"] == "eval")
    meta = json.loads((run_dir / "meta.json").read_text())["group"]["train"]
    assert meta["n_groups"] > 0 and meta["mean_weight_correct"] > meta["mean_weight_incorrect"]

    out = tmp_path / "sweep"
    result = runner.invoke(app, ["sweep", "--out", str(out), "--methods", "uniform,group,shuffled:group", "--seeds",
                                 "1", "--workers", "1", "--no-evaluate", "--no-progress", cache, *TINY[:-1]])
    assert result.exit_code == 0, result.output
    assert sorted(p.parent.name for p in out.glob("*/seed0")) == ["group", "shuffled-of-group", "uniform"]
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert {v["label"] for v in report["variants"]} == {"uniform", "group", "shuffled:group"}
    localised = {r["variant"] for r in report["localisation"] if r["metric"] == "loc_auc_incorrect"}
    assert localised == {"uniform", "group", "shuffled:group"}
    assert "## Localisation" in (out / "report.md").read_text()


VOCAB = 41


def group_records(n_problems: int, seed: int) -> list[EncodedRecord]:
    """Encoded records carrying group weights, as GroupWeight.prepare leaves them (3 solutions per problem)."""
    rng = random.Random(seed)
    out = []
    for p in range(n_problems):
        for s, weight in enumerate((2.5, 0.4, 0.4)):
            length = rng.randint(8, 16)
            ids = [1] + [rng.randint(3, VOCAB - 1) for _ in range(length - 2)] + [2]
            out.append(EncodedRecord(f"p{p}-{s}", ids, rng.randint(1, length - 3), s == 0, record_weights=[weight]))
    return out


def first_step(tmp_path: Path, *overrides: str) -> tuple[dict, dict[str, torch.Tensor]]:
    cfg = load_config(None, [f"run_dir={tmp_path}", "model.d_model=32", "model.n_layers=2", "model.n_heads=3",
                             "model.n_attn_heads=4", "train.max_steps=1", "train.progress=false", "data.train_on=all",
                             "weighting.name=group", *overrides])
    torch.manual_seed(0)
    model = MTPModel.from_config(cfg.model, vocab_size=VOCAB, pad_id=0, bos_id=1, eos_id=2)
    trainer = Trainer(cfg, model=model, weight_fn=GroupWeight(cfg.weighting.group), train_data=group_records(6, 1),
                      valid_data=group_records(2, 2), pad_id=0, run_dir=tmp_path)
    grads: dict[str, torch.Tensor] = {}  # what the optimizer was about to apply (Adam's step hides differences)
    trainer.optimizer.step = lambda: grads.update(
        {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    return trainer.train_step(), grads


def test_group_accumulation_matches_one_large_batch(tmp_path):
    row_one, grads_one = first_step(tmp_path / "a", "train.batch_size=8", "train.grad_accum=1")
    row_two, grads_two = first_step(tmp_path / "b", "train.batch_size=4", "train.grad_accum=2")
    assert row_one["loss"] == pytest.approx(row_two["loss"], rel=1e-5) and row_one["w_std"] > 0
    assert grads_one.keys() == grads_two.keys() and grads_one
    for name, g in grads_one.items():
        torch.testing.assert_close(g, grads_two[name], rtol=1e-4, atol=1e-7, msg=name)
