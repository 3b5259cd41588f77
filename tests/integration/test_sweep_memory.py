"""The memory estimate is printed once per sweep (its largest run's), once per `wmtp train`; runs a sweep
launches still refuse to start when the estimate exceeds the device memory."""

from __future__ import annotations

from typer.testing import CliRunner

from wmtp.cli import app
from wmtp.sweep import plan_sweep, run_sweep, sweep_memory

HEADER = "memory estimate per device"
TINY = ["data.synthetic.n_problems=20", "data.vocab_size=300", "model.d_model=32", "model.n_layers=2",
        "model.n_attn_heads=2", "model.n_heads=2", "train.batch_size=4", "train.max_steps=2", "train.eval_every=2",
        "train.eval_batches=1", "train.ckpt_every=2"]


def test_sweep_prints_its_largest_estimate_once(tmp_path, capfd):
    plan = plan_sweep(None, [*TINY, f"data.cache_dir={tmp_path / 'cache'}"], out_dir=tmp_path / "sweep",
                      methods=["uniform"], seeds=[0, 1], grid={"train.batch_size": ["2", "4"]})
    assert len(plan.runs) == 4
    name, estimate = sweep_memory(plan)
    assert name.startswith("uniform-batch_size=4/")  # the larger micro-batch
    capfd.readouterr()
    results = run_sweep(plan, workers=1, evaluate=False)
    assert all("error" not in r for r in results.values()), results
    err = capfd.readouterr().err
    assert err.count(HEADER) == 1, err
    assert f"largest of the sweep's 4 runs: {name}" in err and estimate.table() in err


def test_sweep_runs_still_refuse_when_memory_is_short(tmp_path, capfd):
    plan = plan_sweep(None, [*TINY, f"data.cache_dir={tmp_path / 'cache'}", "train.device_memory_gb=0.0001"],
                      out_dir=tmp_path / "sweep", methods=["uniform"], seeds=[0, 1])
    results = run_sweep(plan, workers=1, evaluate=False)
    assert [("exceeds the device memory" in r.get("error", "")) for r in results.values()] == [True, True], results
    assert capfd.readouterr().err.count(HEADER) == 1


def test_single_train_prints_the_estimate(tmp_path):
    result = CliRunner().invoke(app, ["train", *TINY, "train.progress=false", f"data.cache_dir={tmp_path / 'cache'}",
                                      f"run_dir={tmp_path / 'run'}"])
    assert result.exit_code == 0, result.output
    assert result.output.count(HEADER) == 1
