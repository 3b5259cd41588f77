"""`wmtp demo` end to end, as a user runs it (on a smaller budget): methods × seeds → evaluation → report."""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys

import pytest

from wmtp import cli
from wmtp.demo import DEMO_METHODS, DEMO_SEEDS, plan_demo
from wmtp.sweep import parse_seeds

METHODS = ("uniform", "critic", "rho1", "shuffled:critic", "uniform@all")
DIRS = {"uniform": "uniform", "critic": "critic", "rho1": "rho1", "shuffled:critic": "shuffled-of-critic",
        "uniform@all": "uniform-on-all"}


def test_the_default_demo_runs_five_seeds_of_every_method_and_control_from_one_base(tmp_path):
    params = inspect.signature(cli.demo).parameters
    methods, seeds = params["methods"].default.split(","), parse_seeds(params["seeds"].default)
    assert tuple(methods) == DEMO_METHODS and seeds == list(range(DEMO_SEEDS)) and DEMO_SEEDS >= 5
    plan = plan_demo(None, [], run_dir=tmp_path, methods=methods, seeds=seeds, base_steps=params["base_steps"].default)
    assert len(plan.runs) == 6 * 5 and plan.base is not None and plan.reference is not None
    by_method: dict[str, list] = {}
    for run in plan.runs:
        by_method.setdefault(run.method, []).append(run)
        assert run.cfg.model.init_from == str(tmp_path / "base" / "model")  # every method fine-tunes one base
    assert set(by_method) == {"uniform", "critic", "rho1", "shuffled:critic", "shuffled:rho1", "uniform@all"}
    for method, runs in by_method.items():  # paired by seed
        assert sorted(r.seed for r in runs) == seeds, method
    settings = {m: (rs[0].cfg.weighting.name, rs[0].cfg.weighting.control_of if rs[0].cfg.weighting.name == "shuffled"
                    else None, rs[0].cfg.data.train_on) for m, rs in by_method.items()}
    assert settings == {"uniform": ("uniform", None, "correct"), "critic": ("critic", None, "all"),
                        "rho1": ("rho1", None, "correct"), "shuffled:critic": ("shuffled", "critic", "all"),
                        "shuffled:rho1": ("shuffled", "rho1", "correct"), "uniform@all": ("uniform", None, "all")}


@pytest.mark.slow
@pytest.mark.timeout(1500)  # minutes on an idle 2-core machine, far more when it is shared
def test_demo_compares_methods_over_seeds_and_writes_the_report(tmp_path):
    run_dir = tmp_path / "demo"
    subprocess.run(
        # the demo with a smaller budget: 2 seeds, 40 base + 40 steps, a smaller generated task, one control
        [sys.executable, "-m", "wmtp", "demo", "--run-dir", str(run_dir), "--seeds", "2", "--workers", "2",
         "--methods", ",".join(METHODS), "--base-steps", "40", "--no-progress", f"data.cache_dir={tmp_path}/cache",
         "data.synthetic.n_problems=80", "train.max_steps=40", "train.eval_every=20"],
        check=True,
        timeout=1500,
    )
    summary = json.loads((run_dir / "demo_summary.json").read_text())
    assert summary["wall_s"] > 0 and not [r for r in summary["runs"].values() if "error" in r]
    data = json.loads((run_dir / "report.json").read_text())
    order = ["uniform", "uniform@all", "critic", "shuffled:critic", "rho1"]  # uniform first, controls after their method
    assert [(v["label"], sorted(v["seeds"])) for v in data["variants"]] == [(m, [0, 1]) for m in order]
    variants = {v["label"]: v for v in data["variants"]}
    assert (variants["critic"]["baseline"], variants["critic"]["data_baseline"], variants["critic"]["controls"]) == (
        "uniform", "uniform@all", ["shuffled:critic"])
    against = {(r["variant"], r["against_variant"], r["paired_by"]) for r in data["comparisons"]
               if r["metric"].startswith("synthetic pass@1")}
    for pair in (("critic", "shuffled:critic"), ("critic", "uniform@all"), ("critic", "uniform"), ("rho1", "uniform")):
        assert {(*pair, "seed"), (*pair, "problem")} <= against, pair
    rows = {(r["metric"].split(" (")[0], r["variant"]) for r in data["results"]}
    for metric in ("validation loss", "held-out CE head 1", "top-1 accuracy head 4", "synthetic pass@1",
                   "synthetic pass@1, per problem"):
        for method in METHODS:
            assert (metric, method) in rows, (metric, method)
    for method, name in DIRS.items():
        for seed in (0, 1):
            run = run_dir / name / f"seed{seed}"
            heads = json.loads((run / "analysis" / "heads.json").read_text())
            assert math.isfinite(heads["ce_h1"]) and 0 <= heads["acc_h1"] <= 1, run
            if "critic" not in name:  # learned beyond a unigram model (the critic is tested with the critic)
                assert heads["ce_h1"] < heads["unigram_ce"], (run, heads)
            for f in ("config.yaml", "meta.json", "model/model.safetensors", "eval/synthetic.json",
                      "analysis/heads.json"):
                assert (run / f).is_file(), run / f
    report = (run_dir / "report.md").read_text()
    assert "Wilcoxon" in report and "figures/loss_curves.png" in report
    assert "The by-seed tests cannot reach p < 0.05, whatever the effect" in report  # 2 seeds: min p 2/2^2
    assert (run_dir / "report.html").is_file() and (run_dir / "figures" / "loss_curves.png").stat().st_size > 5000
