"""`wmtp demo`: the main job on the embedded default — uniform, critic and Rho-1 weighted MTP × seeds with their
controls, each evaluated on the test split, compared in report.md / report.html.

DEMO_METHODS: the three methods, the shuffled control of each weighted one (the same weights permuted among
the batch's valid entries: what the weights' link to the tokens adds) and uniform on the critic's data
(correct + incorrect records: what the critic's data adds), all paired by seed (DEMO_SEEDS seeds each) and all
fine-tuning one shared uniform base model.

It is a sweep (`wmtp.sweep`) with a budget sized for 2 CPU cores (DEMO_OVERRIDES, before the user's own
overrides, which win) followed by `wmtp report` on its directory. Resumable like any sweep.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from wmtp.analysis.runs import is_run_dir
from wmtp.config import ConfigError
from wmtp.sweep import SweepPlan, plan_sweep, run_sweep_with_progress

DEMO_METHODS = ("uniform", "critic", "rho1", "shuffled:critic", "shuffled:rho1", "uniform@all")
DEMO_SEEDS = 5
DEMO_BASE_STEPS = 400
# A shared uniform base (the CLI's --base-steps, 400, at the preset's lr 3e-3 with 20 warm-up steps, validated every
# 100 steps), then 60 weighted fine-tuning steps per run at lr 1e-3 (5 warm-up steps; 3 validations, 2 checkpoints):
# 30 runs, the base, the reference and every evaluation fit in 15 min on 2 idle cores (150 steps per run: ~23 min).
DEMO_OVERRIDES = ("train.max_steps=60", "train.eval_every=20", "train.ckpt_every=30", "optim.lr=1e-3",
                  "optim.warmup_steps=5")
DEMO_BASE_OVERRIDES = ("optim.lr=3e-3", "optim.warmup_steps=20", "train.eval_every=100", "train.ckpt_every=200")


class DemoFailed(RuntimeError):
    """Some runs of the demo failed; the message names them (running the demo again resumes them)."""


def plan_demo(config: str | None, overrides: list[str], *, run_dir: Path, methods: list[str], seeds: list[int],
              base_steps: int) -> SweepPlan:
    """The demo's sweep plan, every run in run_dir: DEMO_OVERRIDES, then the user's overrides (which win); the base
    (and the Rho-1 reference trained with its settings) then takes DEMO_BASE_OVERRIDES last."""
    if is_run_dir(run_dir):  # the single-run layout of earlier versions: its report would compare nothing
        raise ConfigError(f"{run_dir} holds one run from an older `wmtp demo`; remove it or pass another --run-dir")
    return plan_sweep(config, [*DEMO_OVERRIDES, *overrides], out_dir=run_dir, methods=methods, seeds=seeds,
                      base_steps=base_steps, base_overrides=DEMO_BASE_OVERRIDES)


def run_demo(
    config: str | None,
    overrides: list[str],
    *,
    run_dir: str | Path,
    methods: list[str],
    seeds: list[int],
    workers: int,
    base_steps: int,
    progress: bool = True,
) -> Path:
    """Train the shared base, then every (method, seed) from it, evaluate them, and write run_dir/report.md
    (returned). methods: `--methods` items (wmtp.sweep.parse_method), e.g. DEMO_METHODS."""
    from wmtp.analysis.report import write_report  # numpy / scipy / matplotlib: not for every CLI start

    started = time.perf_counter()
    run_dir = Path(run_dir)
    plan = plan_demo(config, overrides, run_dir=run_dir, methods=methods, seeds=seeds, base_steps=base_steps)
    results = run_sweep_with_progress(plan, workers=workers, show=progress)
    failed = {name: r["error"] for name, r in results.items() if "error" in r}
    wall_s = time.perf_counter() - started
    cfg = plan.runs[0].cfg
    planned = list(dict.fromkeys(r.method for r in plan.runs))
    preface = (
        f"`wmtp demo`: embedded synthetic code task, methods {', '.join(planned)} × seeds "
        f"{', '.join(map(str, seeds))} ({len(plan.runs)} runs; `shuffled:X` is X's weights permuted among the "
        "batch's valid entries, `uniform@all` uniform on correct + incorrect records, the critic's data); "
        + (f"every run fine-tunes a shared uniform base model ({base_steps} steps, `base/`); " if base_steps else "")
        + f"{cfg.train.max_steps} steps of {cfg.train.batch_size} records per run, "
        f"H={cfg.model.n_heads} heads, d_model={cfg.model.d_model}, {cfg.model.n_layers} layers; {workers} worker "
        f"process(es). Wall time of this invocation: {wall_s:.0f} s (runs already finished are not recomputed)."
        + (f" FAILED runs: {', '.join(failed)}." if failed else "")
    )
    report = write_report([run_dir], run_dir, title="wmtp demo report", preface=preface)
    summary = {"wall_s": wall_s, "methods": planned, "seeds": seeds, "workers": workers, "runs": results}
    (run_dir / "demo_summary.json").write_text(json.dumps(summary, indent=1))
    if failed:
        raise DemoFailed("; ".join(f"{name}: {err}" for name, err in failed.items()))
    return report
