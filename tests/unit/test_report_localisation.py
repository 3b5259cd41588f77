"""The report's localisation table on run directories written here: run_metrics reads the last validation's
loc_* and the mean EOS shares; the table shows their mean and bootstrap CI over seeds, per variant and per head."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from wmtp.analysis.metrics import run_metrics
from wmtp.analysis.report import write_report
from wmtp.analysis.runs import load_run
from wmtp.config import dump_yaml, load_config

H, SEEDS = 2, (0, 1, 2)


def auc_incorrect(method: str, seed: int) -> float:
    return 0.5 if method == "uniform" else 0.3 + 0.05 * seed


def make_run(root, method: str, seed: int, *, localisation: bool = True):
    run = root / method / f"seed{seed}"
    run.mkdir(parents=True)
    cfg = load_config(None, [f"seed={seed}", f"run_dir={run}", f"model.n_heads={H}", f"weighting.name={method}",
                             "data.train_on=all", "train.log_every=1"])
    (run / "config.yaml").write_text(dump_yaml(cfg))
    rows = []
    for step in (1, 2):
        rows.append({"kind": "train", "step": step, "loss": 3.0, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 10.0,
                     "step_s": 0.1, "tokens_seen": 100 * step, "peak_mem_mb": 1.0, "skipped": False, "bad_steps": 0,
                     **({"eos_share": 0.1 * step + 0.01 * seed, "eos_entry_share": 0.05} if localisation else {})})
        loc = {}
        if localisation:
            first = step == 1  # the table reads the last validation
            loc = {"loc_auc_incorrect": 0.9 if first else auc_incorrect(method, seed), "loc_lift_incorrect": 1.5,
                   "loc_lift_correct": 1.0, **{f"loc_auc_incorrect_h{k}": 0.4 + 0.1 * k for k in range(1, H + 1)}}
            if method == "uniform":
                loc["loc_auc_correct"] = 0.5  # critic: undefined (left out of the row)
        rows.append({"kind": "eval", "step": step, "val_loss": 2.0 + seed, "val_ce_h1": 2.0, "val_ce_h2": 2.5, **loc})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_run_metrics_reads_the_last_validation_and_mean_eos_shares(tmp_path):
    m = run_metrics(load_run(make_run(tmp_path, "critic", 1)))
    assert m["loc_auc_incorrect"] == auc_incorrect("critic", 1) and m["loc_auc_incorrect_h2"] == pytest.approx(0.6)
    assert "loc_auc_correct" not in m
    assert m["eos_share"] == pytest.approx((0.11 + 0.21) / 2) and m["eos_entry_share"] == 0.05


def test_report_has_the_localisation_table(tmp_path):
    for seed in SEEDS:
        make_run(tmp_path / "runs", "uniform", seed)
        make_run(tmp_path / "runs", "critic", seed)
    path = write_report([tmp_path / "runs"], tmp_path / "out")
    text = path.read_text()
    assert "## Localisation" in text and "| loc AUC (incorrect)" in text.replace("| variant ", "")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    method = {v["label"]: v["method"] for v in report["variants"]}
    row = {(method[r["variant"]], r["metric"]): r for r in report["localisation"]}
    critic = [auc_incorrect("critic", s) for s in SEEDS]
    got = row[("critic", "loc_auc_incorrect")]
    ci = stats.bootstrap((np.array(critic),), np.mean, method="percentile", n_resamples=9999,
                         rng=np.random.default_rng(0)).confidence_interval
    assert got["mean"] == pytest.approx(np.mean(critic))
    assert (got["low"], got["high"]) == pytest.approx((ci.low, ci.high))
    assert row[("uniform", "loc_auc_incorrect")]["mean"] == 0.5 and ("critic", "loc_auc_correct") not in row
    assert row[("critic", "loc_auc_incorrect_h1")]["mean"] == pytest.approx(0.5)
    assert row[("uniform", "eos_share")]["mean"] == pytest.approx(0.15 + 0.01)  # steps 0.1, 0.2 (+0.01·seed)
    table = [line for line in text.splitlines() if line.startswith("| critic ")]
    assert any("0.35 [0.3, 0.4]" in line for line in table)  # mean and CI of the pooled AUC on incorrect records
    assert any(line.split("|")[2].strip() == "2" for line in table)  # the per-head table


def test_runs_without_localisation_say_so(tmp_path):
    make_run(tmp_path / "runs", "uniform", 0, localisation=False)
    text = write_report([tmp_path / "runs"], tmp_path / "out").read_text()
    assert "No run logged localisation metrics" in text
