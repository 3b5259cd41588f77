"""train.tensorboard: the event files in run_dir/tb/ hold the same scalars as metrics.jsonl, and a weight histogram
per head; off by default (no tb/)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import HISTOGRAMS, SCALARS, EventAccumulator  # noqa: E402

from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader  # noqa: E402
from test_critic_training import make_cfg as critic_cfg  # noqa: E402
from test_critic_training import make_trainer as critic_trainer  # noqa: E402
from test_trainer import CrashAfter, make_cfg, make_trainer  # noqa: E402

from wmtp.train.run_dir import read_metrics  # noqa: E402


def read_events(tb_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(tb_dir), size_guidance={SCALARS: 0, HISTOGRAMS: 0})
    acc.Reload()
    return acc


def scalars_of(row: dict) -> dict[str, float]:
    """The numeric fields of a metrics row as TensorBoard tags (booleans as 0/1)."""
    return {
        f"{row['kind']}/{k}": float(v)
        for k, v in row.items()
        if k not in ("kind", "step") and isinstance(v, (bool, int, float))
    }


def assert_same_scalars(run_dir: Path, kinds: set[str]) -> None:
    rows = [r for r in read_metrics(run_dir) if r["kind"] in kinds]
    assert {r["kind"] for r in rows} == kinds
    acc = read_events(run_dir / "tb")
    tags = set(acc.Tags()["scalars"])
    n_checked = 0
    for row in rows:
        for tag, value in scalars_of(row).items():
            assert tag in tags, tag
            at_step = [e.value for e in acc.Scalars(tag) if e.step == row["step"]]
            assert len(at_step) == 1, (tag, row["step"], at_step)
            assert at_step[0] == pytest.approx(value, rel=1e-6, abs=1e-6), (tag, row["step"])
            n_checked += 1
    # every tag comes from metrics.jsonl, and no extra points
    assert tags == {tag for row in rows for tag in scalars_of(row)}
    assert sum(len(acc.Scalars(t)) for t in tags) == n_checked


def test_tensorboard_mirrors_metrics(tmp_path):
    run_dir = tmp_path / "run"
    cfg = make_cfg(run_dir, "train.tensorboard=true")
    threads = set(threading.enumerate())
    make_trainer(cfg).train()
    assert set(threading.enumerate()) == threads  # the writer's thread ended with training
    assert_same_scalars(run_dir, {"train", "eval"})

    acc = read_events(run_dir / "tb")
    scalars = set(acc.Tags()["scalars"])
    H = cfg.model.n_heads
    for name in ("loss", "lr", "grad_norm", "w_mean", "tokens_per_s", "skipped", *(f"ce_h{k}" for k in range(1, H + 1))):
        assert f"train/{name}" in scalars
    assert {"eval/val_loss", *(f"eval/val_ce_h{k}" for k in range(1, H + 1))} <= scalars

    hists = [r for r in read_metrics(run_dir) if r["kind"] == "weights_hist"]
    assert acc.Tags()["histograms"] and set(acc.Tags()["histograms"]) == {f"weights/h{k}" for k in range(1, H + 1)}
    for k in range(1, H + 1):
        events = acc.Histograms(f"weights/h{k}")
        assert [e.step for e in events] == [r["step"] for r in hists]
        for event, row in zip(events, hists):
            assert list(event.histogram_value.bucket) == row[f"counts_h{k}"]
            assert list(event.histogram_value.bucket_limit) == pytest.approx(row["edges"][1:])
            assert event.histogram_value.num == sum(row[f"counts_h{k}"])


def test_tensorboard_off_by_default(tmp_path):
    run_dir = tmp_path / "run"
    cfg = make_cfg(run_dir, "train.max_steps=2")
    assert cfg.train.tensorboard is False
    make_trainer(cfg).train()
    assert (run_dir / "metrics.jsonl").is_file()
    assert not (run_dir / "tb").exists()


def test_tensorboard_critic_stage_rows(tmp_path):
    run_dir = tmp_path / "critic"
    critic_trainer(critic_cfg(run_dir, "train.tensorboard=true")).train()
    assert_same_scalars(run_dir, {"critic_train", "critic_eval", "train", "eval"})


def latest_scalars(tb_dir: Path) -> dict[tuple[str, int], float]:
    """(tag, step) → the last value written for it, event files in their (time-stamped) name order."""
    out = {}
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out[value.tag, event.step] = value.simple_value
    return out


def test_tensorboard_after_resume(tmp_path):
    cfg = make_cfg(tmp_path / "run", "train.tensorboard=true")
    with pytest.raises(KeyboardInterrupt):
        make_trainer(cfg, weight_fn=CrashAfter(4)).train()  # checkpoint at step 3, dies during step 5
    assert len(list((tmp_path / "run/tb").glob("events.out.tfevents.*"))) == 1  # closed on the way out
    resumed = make_trainer(cfg)
    assert resumed.resume() and resumed.step == 3
    resumed.train()

    assert len(list((tmp_path / "run/tb").glob("events.out.tfevents.*"))) == 2
    rows = [r for r in read_metrics(tmp_path / "run") if r["kind"] in ("train", "eval")]
    expected = {(tag, r["step"]): v for r in rows for tag, v in scalars_of(r).items()}
    got = latest_scalars(tmp_path / "run/tb")
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
