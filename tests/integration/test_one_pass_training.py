"""The trainer's one-pass path (local weights) under gradient accumulation: the step's gradient and loss equal the
two-pass path's, with one trunk forward per micro-batch and no no-grad pass."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from test_trainer import make_cfg, make_records, make_trainer

from wmtp.data.collate import EncodedRecord
from wmtp.train.trainer import Trainer
from wmtp.weighting.rho1 import Rho1Config, Rho1Weight


def records_with_ref_ce(n: int, seed: int) -> list[EncodedRecord]:
    """test_trainer's records, each with a random reference CE per token in [0, 6) (0 for the first)."""
    rng = random.Random(seed)
    return [replace(r, ref_ce=[0.0] + [rng.uniform(0, 6) for _ in r.input_ids[1:]]) for r in make_records(n, seed)]


class TwoPassRho1(Rho1Weight):
    def has_local_weights(self) -> bool:
        return False


def _trainer(tmp_path: Path, weight_fn, *overrides: str) -> Trainer:
    """test_trainer's trainer (2 records per micro-batch, 2 micro-batches per step) whose `grads` are the step's
    gradients as they are before clipping (the optimizer then steps as usual)."""
    cfg = make_cfg(tmp_path, "train.batch_size=2", "train.grad_accum=2", "train.max_steps=2", *overrides)
    trainer = make_trainer(cfg, weight_fn, train_data=records_with_ref_ce(12, seed=1),
                           valid_data=records_with_ref_ce(4, seed=2))  # fmt: skip
    clip = trainer.clip_grad_norm

    def capture_then_clip() -> float:
        trainer.grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        return clip()

    trainer.clip_grad_norm = capture_then_clip
    return trainer


def _count_trunk_forwards(trainer: Trainer) -> list[int]:
    calls = [0]
    inner = trainer.model.trunk_forward

    def counted(*args, **kwargs):
        calls[0] += 1
        return inner(*args, **kwargs)

    trainer.model.trunk_forward = counted
    return calls


@pytest.mark.parametrize("normalize", ["mean", "per_position"])
def test_one_pass_under_grad_accum_equals_two_passes(tmp_path, normalize):
    rcfg = Rho1Config(excess="signed", min_ce_diff=0.8, temperature=0.7)
    rows, grads = [], []
    for name, fn in (("one", Rho1Weight(rcfg)), ("two", TwoPassRho1(rcfg))):
        trainer = _trainer(tmp_path / name, fn, f"weighting.normalize={normalize}")
        calls = _count_trunk_forwards(trainer)
        for _ in range(2):  # the second step starts from parameters the first one changed
            rows.append(trainer.train_step())
        grads.append(trainer.grads)
        # one trunk forward per micro-batch in the one pass; the two-pass path adds a no-grad one per micro-batch
        assert calls[0] == (4 if name == "one" else 8)
    one, two = grads
    assert one.keys() == two.keys() and len(one) > 0
    for n in one:
        scale = max(two[n].abs().max().item(), 1.0)
        torch.testing.assert_close(one[n], two[n], atol=1e-6 * scale, rtol=1e-5, msg=n)
    for a, b in zip(rows[:2], rows[2:]):
        for key in ("loss", "w_mean", "w_std", "w_max", "excess_h1", "excess_h3", "ce_h2"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    assert rows[0]["w_std"] > 0.05
