"""`wmtp demo`: the main job on the embedded default — uniform, critic and Rho-1 weighted MTP × seeds, each
evaluated on the test split, compared in report.md / report.html.

It is a sweep (`wmtp.sweep`) with a budget sized for 2 CPU cores (DEMO_OVERRIDES, before the user's own
overrides, which win) followed by `wmtp report` on its directory. Resumable like any sweep.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from wmtp.analysis.report import write_report
from wmtp.analysis.runs import is_run_dir
from wmtp.config import ConfigError
from wmtp.sweep import plan_sweep, run_sweep_with_progress

# A shared uniform base (the CLI's --base-steps, 200) then 150 weighted steps per run: base + reference +
# 3 methods × 3 seeds + evaluation fit in ~15 min on 2 idle cores.
DEMO_OVERRIDES = ("train.max_steps=150", "train.eval_every=25", "train.ckpt_every=50")


class DemoFailed(RuntimeError):
    """Some runs of the demo failed; the message names them (running the demo again resumes them)."""


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
    (returned)."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    if is_run_dir(run_dir):  # the single-run layout of earlier versions: its report would compare nothing
        raise ConfigError(f"{run_dir} holds one run from an older `wmtp demo`; remove it or pass another --run-dir")
    plan = plan_sweep(config, [*DEMO_OVERRIDES, *overrides], out_dir=run_dir, methods=methods, seeds=seeds,
                      base_steps=base_steps)
    results = run_sweep_with_progress(plan, workers=workers, show=progress)
    failed = {name: r["error"] for name, r in results.items() if "error" in r}
    wall_s = time.perf_counter() - started
    cfg = plan.runs[0].cfg
    preface = (
        f"`wmtp demo`: embedded synthetic code task, methods {', '.join(methods)} × seeds "
        f"{', '.join(map(str, seeds))}; "
        + (f"every run fine-tunes a shared uniform base model ({base_steps} steps, `base/`); " if base_steps else "")
        + f"{cfg.train.max_steps} steps of {cfg.train.batch_size} records per run, "
        f"H={cfg.model.n_heads} heads, d_model={cfg.model.d_model}, {cfg.model.n_layers} layers; {workers} worker "
        f"process(es). Wall time of this invocation: {wall_s:.0f} s (runs already finished are not recomputed)."
        + (f" FAILED runs: {', '.join(failed)}." if failed else "")
    )
    report = write_report([run_dir], run_dir, title="wmtp demo report", preface=preface)
    summary = {"wall_s": wall_s, "methods": methods, "seeds": seeds, "workers": workers, "runs": results}
    (run_dir / "demo_summary.json").write_text(json.dumps(summary, indent=1))
    if failed:
        raise DemoFailed("; ".join(f"{name}: {err}" for name, err in failed.items()))
    return report
