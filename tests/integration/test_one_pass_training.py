"""The trainer's one-pass path (local weights) under gradient accumulation: the step's gradient and loss equal the
two-pass path's, with one trunk forward per micro-batch and no no-grad pass."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from wmtp.config import load_config
from wmtp.data.collate import EncodedRecord
from wmtp.model.mtp import MTPModel
from wmtp.train.trainer import Trainer
from wmtp.weighting.rho1 import Rho1Config, Rho1Weight

VOCAB = 61


def make_records(n: int, seed: int) -> list[EncodedRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.randint(8, 20)
        ids = [1] + [rng.randint(3, VOCAB - 1) for _ in range(length - 2)] + [2]
        ref = [0.0] + [rng.uniform(0, 6) for _ in range(length - 1)]
        out.append(EncodedRecord(f"r{i}", ids, n_prompt=rng.randint(1, length - 3), is_correct=True, ref_ce=ref))
    return out


class TwoPassRho1(Rho1Weight):
    def has_local_weights(self) -> bool:
        return False


class GradCapture(Trainer):
    """Keeps the step's gradients as they are before clipping (the optimizer then steps as usual)."""

    def clip_grad_norm(self) -> float:
        self.grads = {n: p.grad.clone() for n, p in self.model.named_parameters() if p.grad is not None}
        return super().clip_grad_norm()


def _trainer(tmp_path: Path, weight_fn, *overrides: str) -> GradCapture:
    cfg = load_config(None, [f"run_dir={tmp_path}", "model.d_model=32", "model.n_layers=2", "model.n_heads=3",
                             "model.n_attn_heads=4", "train.batch_size=2", "train.grad_accum=2", "train.max_steps=2",
                             "train.progress=false", "train.ce_chunk_tokens=16", *overrides])  # fmt: skip
    torch.manual_seed(cfg.seed)
    model = MTPModel.from_config(cfg.model, vocab_size=VOCAB, pad_id=0, bos_id=1, eos_id=2)
    return GradCapture(cfg, model=model, weight_fn=weight_fn, train_data=make_records(12, seed=1),
                       valid_data=make_records(4, seed=2), pad_id=0, run_dir=tmp_path)  # fmt: skip


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
