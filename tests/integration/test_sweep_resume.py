"""`wmtp sweep` resumption: a real sweep process is killed mid-way, restarted, and recomputes nothing finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TINY = ["data.synthetic.n_problems=20", "data.vocab_size=300", "model.d_model=32", "model.n_layers=2",
        "model.n_attn_heads=2", "model.n_heads=2", "train.batch_size=4", "train.max_steps=20", "train.eval_every=10",
        "train.ckpt_every=5", "train.log_every=1"]


def sweep_cmd(out: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "wmtp", "sweep", "--out", str(out), "--methods", "uniform", "--seeds", "3",
            "--no-evaluate", "--no-progress", f"data.cache_dir={cache}", *TINY]


def wait_for(predicate, proc, timeout=300.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, "the sweep ended before it could be killed"
        assert time.monotonic() < deadline, "timed out waiting for the sweep"
        time.sleep(0.02)


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]


def test_killed_sweep_resumes_without_recomputing_finished_runs(tmp_path):
    out, cache = tmp_path / "sweep", tmp_path / "cache"
    first, second = out / "uniform" / "seed0", out / "uniform" / "seed1"
    proc = subprocess.Popen(sweep_cmd(out, cache), start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        # kill the whole sweep once seed0 is finished and seed1 has a checkpoint but is not finished
        wait_for(lambda: (first / "model" / "model.safetensors").is_file()
                 and (second / "checkpoints" / "step_000005").is_dir(), proc)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (second / "model").exists(), "seed1 finished before the kill: the test did not interrupt it"
    first_rows, first_mtime = rows(first), (first / "model" / "model.safetensors").stat().st_mtime_ns
    ckpts = sorted(p.name for p in (second / "checkpoints").glob("step_*"))
    resumed_from = int(ckpts[-1].removeprefix("step_"))
    before = [r for r in rows(second) if r["step"] <= resumed_from]

    done = subprocess.run(sweep_cmd(out, cache), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "done uniform/seed0: already trained" in done.stderr
    assert "done uniform/seed1: trained" in done.stderr and "done uniform/seed2: trained" in done.stderr
    # the finished run is untouched: same model file, same metrics (step times included)
    assert (first / "model" / "model.safetensors").stat().st_mtime_ns == first_mtime
    assert rows(first) == first_rows
    # the killed run continued from its checkpoint: rows up to it are the very rows written before the kill
    after = rows(second)
    assert [r for r in after if r["step"] <= resumed_from] == before
    assert max(r["step"] for r in after if r["kind"] == "train") == 20
    assert [r["step"] for r in after if r["kind"] == "train"] == list(range(1, 21))
    for seed in range(3):
        assert (out / "uniform" / f"seed{seed}" / "model" / "model.safetensors").is_file()
