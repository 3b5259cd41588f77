"""`wmtp demo`: the main job on the embedded default — train a tiny MTP model, evaluate, write report.md."""

from __future__ import annotations

import json
import time
from pathlib import Path

from wmtp.analysis.baselines import unigram_ce
from wmtp.config import RunConfig, apply_overrides, validate
from wmtp.eval.benchmarks.synthetic import evaluate_synthetic
from wmtp.eval.generate import SamplingConfig
from wmtp.eval.sandbox import SandboxUnavailable
from wmtp.train.run import score_reference, train_run


def run_demo(cfg: RunConfig) -> Path:
    """Train (or finish training) cfg's run, evaluate it on the valid split, write run_dir/report.md."""
    started = time.perf_counter()
    run = train_run(cfg, resume=True)  # a finished demo is not retrained; a killed one continues
    trainer = run.trainer
    final = trainer.validate()
    baseline = unigram_ce(trainer.train_data, trainer.valid_data, trainer.model.vocab_size)
    run_dir = Path(cfg.run_dir)
    functional = _functional_eval(run, run_dir)
    rho1 = _rho1_runs(cfg, run_dir)
    wall_s = time.perf_counter() - started
    summary = {
        "final_eval": final,
        "unigram_ce": baseline,
        "functional": functional,
        "rho1": rho1,
        "wall_s": wall_s,
        "steps": trainer.step,
    }
    (run_dir / "demo_summary.json").write_text(json.dumps(summary, indent=1))
    report = run_dir / "report.md"
    report.write_text(_report_markdown(cfg, summary, n_train=len(trainer.train_data), n_valid=len(trainer.valid_data)))
    return report


def _derived(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    return validate(apply_overrides(cfg.model_dump(mode="json"), overrides))


def _rho1_runs(cfg: RunConfig, run_dir: Path) -> dict:
    """Rho-1 as its paper does: a next-token reference (H=1) trained on the correct solutions, its CE of every
    token cached (`score-ref`), then the same MTP run as above with rho1 weights. Each stage resumes."""
    ref_cfg = _derived(cfg, [f"run_dir={run_dir / 'reference'}", "model.n_heads=1", "data.train_on=correct",
                             "weighting.name=uniform"])  # fmt: skip
    reference = train_run(ref_cfg, resume=True)
    rho1_cfg = _derived(cfg, [f"run_dir={run_dir / 'rho1'}", "weighting.name=rho1",
                              f"weighting.rho1.reference={ref_cfg.run_dir}"])  # fmt: skip
    score_reference(rho1_cfg)
    run = train_run(rho1_cfg, resume=True)
    return {
        "reference_val_ce": reference.trainer.validate()["val_ce_h1"],
        "final_eval": run.trainer.validate(),
        "functional": _functional_eval(run, Path(rho1_cfg.run_dir)),
        "settings": rho1_cfg.weighting.rho1.model_dump(include={"excess", "transform", "temperature", "min_ce_diff"}),
    }


def _functional_eval(run, run_dir: Path) -> dict:
    """Greedy pass@1 on the test split, programs run in the sandbox; skipped (and said so) without one."""
    try:
        result = evaluate_synthetic(
            run.trainer.model,
            run.data.tokenizer,
            run.data.test,
            sampling=SamplingConfig(temperature=0.0, n=1, max_new_tokens=128),
            progress=run.cfg.train.progress,
        )
    except SandboxUnavailable as err:
        return {"skipped": str(err)}
    (run_dir / "eval").mkdir(exist_ok=True)
    (run_dir / "eval" / "synthetic.json").write_text(json.dumps(result, indent=1))
    return {"pass@1": result["summary"]["pass@1"], "n_problems": result["n_problems"]}


def _report_markdown(cfg: RunConfig, summary: dict, *, n_train: int, n_valid: int) -> str:
    final, H = summary["final_eval"], cfg.model.n_heads
    rows = "\n".join(f"| {k} | {final[f'val_ce_h{k}']:.4f} |" for k in range(1, H + 1))
    return f"""# wmtp demo report

Embedded synthetic code task, {n_train} training / {n_valid} validation records,
weighting `{cfg.weighting.name}`, H={H} heads, {summary['steps']} steps, seed {cfg.seed}.
Wall time {summary['wall_s']:.1f} s.

## Validation cross-entropy per head (nats per target token)

| head k (predicts t+k) | val CE |
|---|---|
{rows}

Unigram model of the training targets (add-one smoothing): **{summary['unigram_ce']:.4f}** nats.
Head 1 is {summary['unigram_ce'] - final['val_ce_h1']:.4f} nats below it.

## Functional correctness on the test split (greedy decoding, hidden tests run in the sandbox)

{_functional_markdown(summary['functional'])}

{_rho1_markdown(summary, H)}

Run directory: `{cfg.run_dir}` (config.yaml, meta.json, metrics.jsonl, checkpoints/, model/).
"""


def _rho1_markdown(summary: dict, H: int) -> str:
    rho1, uniform = summary["rho1"], summary["final_eval"]
    rows = "\n".join(
        f"| {k} | {uniform[f'val_ce_h{k}']:.4f} | {rho1['final_eval'][f'val_ce_h{k}']:.4f} |" for k in range(1, H + 1)
    )
    settings = ", ".join(f"{k}={v}" for k, v in rho1["settings"].items())
    return f"""## Rho-1 weighting (run `rho1/`)

Reference: a next-token model (H=1) trained on the correct solutions (`reference/`, val CE
{rho1['reference_val_ce']:.4f}); its CE of every token is cached by `wmtp score-ref`. The rho1 run is the run
above with weights from the excess loss ce[t,k] − ref_ce[t+k] ({settings}).

| head k | val CE uniform | val CE rho1 |
|---|---|---|
{rows}

rho1 functional correctness: {_functional_markdown(rho1['functional'])}"""


def _functional_markdown(functional: dict) -> str:
    if "skipped" in functional:
        return f"Skipped: {functional['skipped']}"
    return (
        f"pass@1 = **{functional['pass@1']:.3f}** over {functional['n_problems']} problems "
        "(per-problem results in `eval/synthetic.json`)."
    )
