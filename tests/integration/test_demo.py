"""`wmtp demo` end to end, as a user runs it (on a smaller budget): methods × seeds → evaluation → report."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

METHODS = ("uniform", "critic", "rho1")


@pytest.mark.slow
@pytest.mark.timeout(1500)  # minutes on an idle 2-core machine, far more when it is shared
def test_demo_compares_methods_over_seeds_and_writes_the_report(tmp_path):
    run_dir = tmp_path / "demo"
    subprocess.run(
        # the demo as shipped with a smaller budget: 2 seeds, 40 base + 40 steps, a smaller generated task
        [sys.executable, "-m", "wmtp", "demo", "--run-dir", str(run_dir), "--seeds", "2", "--workers", "2",
         "--methods", ",".join(METHODS), "--base-steps", "40", "--no-progress", f"data.cache_dir={tmp_path}/cache",
         "data.synthetic.n_problems=80", "train.max_steps=40", "train.eval_every=20"],
        check=True,
        timeout=1500,
    )
    summary = json.loads((run_dir / "demo_summary.json").read_text())
    assert summary["wall_s"] > 0 and not [r for r in summary["runs"].values() if "error" in r]
    data = json.loads((run_dir / "report.json").read_text())
    assert [(v["label"], sorted(v["seeds"])) for v in data["variants"]] == [(m, [0, 1]) for m in METHODS]
    rows = {(r["metric"].split(" (")[0], r["variant"]) for r in data["results"]}
    for metric in ("validation loss", "held-out CE head 1", "top-1 accuracy head 4", "synthetic pass@1",
                   "synthetic pass@1, per problem"):
        for method in METHODS:
            assert (metric, method) in rows, (metric, method)
    for name in ("uniform", "critic", "rho1"):
        for seed in (0, 1):
            run = run_dir / name / f"seed{seed}"
            heads = json.loads((run / "analysis" / "heads.json").read_text())
            assert math.isfinite(heads["ce_h1"]) and 0 <= heads["acc_h1"] <= 1, run
            if name != "critic":  # learned beyond a unigram model (the critic's quality is tested with the critic)
                assert heads["ce_h1"] < heads["unigram_ce"], (run, heads)
            for f in ("config.yaml", "meta.json", "model/model.safetensors", "eval/synthetic.json",
                      "analysis/heads.json"):
                assert (run / f).is_file(), run / f
    report = (run_dir / "report.md").read_text()
    assert "Wilcoxon" in report and "figures/loss_curves.png" in report
    assert (run_dir / "report.html").is_file() and (run_dir / "figures" / "loss_curves.png").stat().st_size > 5000
