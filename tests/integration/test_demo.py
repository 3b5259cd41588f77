"""`wmtp demo` end to end, as a user runs it: the main job on the embedded default."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.timeout(1500)  # three short trainings; minutes on an idle 2-core machine, far more when it is shared
def test_demo_learns_far_beyond_a_unigram_model(tmp_path):
    run_dir = tmp_path / "demo"
    subprocess.run(
        # the demo as shipped, on a shorter budget (120 steps per run, not 300) to keep CI well under 15 minutes
        [sys.executable, "-m", "wmtp", "demo", "--run-dir", str(run_dir), f"data.cache_dir={tmp_path}/cache",
         "train.progress=false", "train.max_steps=120"],
        check=True,
        timeout=1500,
    )
    summary = json.loads((run_dir / "demo_summary.json").read_text())
    final, unigram = summary["final_eval"], summary["unigram_ce"]
    assert final["val_ce_h1"] < 0.6 * unigram, (final, unigram)  # 120 steps: ≈2.1 vs ≈4.7 nats
    assert final["val_ce_h1"] < final["val_ce_h4"]  # predicting further ahead is harder
    assert "pass@1" in summary["functional"]
    report = (run_dir / "report.md").read_text()
    assert "val CE" in report and "pass@1" in report
    for name in ("config.yaml", "meta.json", "metrics.jsonl", "model/model.safetensors", "tokenizer/tokenizer.json"):
        assert (run_dir / name).is_file(), name
