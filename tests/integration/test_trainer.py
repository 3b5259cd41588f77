"""The training loop: exact resume, state-free validation, non-finite steps, accumulation, run-dir errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from wmtp.config import load_config
from wmtp.data.collate import EncodedRecord
from wmtp.model.checkpoints import CheckpointError
from wmtp.model.mtp import MTPModel
from wmtp.train.trainer import Trainer, TrainingDiverged
from wmtp.weighting.uniform import UniformWeight

VOCAB = 61


def make_records(n: int, seed: int) -> list[EncodedRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.randint(8, 20)
        n_prompt = rng.randint(1, length - 3)
        ids = [1] + [rng.randint(3, VOCAB - 1) for _ in range(length - 2)] + [2]
        out.append(EncodedRecord(id=f"r{i}", input_ids=ids, n_prompt=n_prompt, is_correct=True))
    return out


def make_cfg(run_dir: Path, *overrides: str):
    return load_config(
        None,
        [
            f"run_dir={run_dir}",
            "model.d_model=32",
            "model.n_layers=2",
            "model.n_heads=3",
            "model.n_attn_heads=4",
            "train.batch_size=4",
            "train.max_steps=6",
            "train.eval_every=2",
            "train.ckpt_every=3",
            "train.progress=false",
            "train.ce_chunk_tokens=16",
            "optim.warmup_steps=2",
            *overrides,
        ],
    )


def make_trainer(cfg, weight_fn=None, *, train_data=None, valid_data=None) -> Trainer:
    """A Trainer of a fresh seeded model on `train_data` / `valid_data` (default: make_records(30) / (9))."""
    torch.manual_seed(cfg.seed)
    model = MTPModel.from_config(cfg.model, vocab_size=VOCAB, pad_id=0, bos_id=1, eos_id=2)
    return Trainer(
        cfg,
        model=model,
        weight_fn=weight_fn or UniformWeight(),
        train_data=make_records(30, seed=1) if train_data is None else train_data,
        valid_data=make_records(9, seed=2) if valid_data is None else valid_data,
        pad_id=0,
        run_dir=Path(cfg.run_dir),
    )


class CrashAfter(UniformWeight):
    """Uniform weights that raise on call number `n + 1`: a crash in the middle of training."""

    def __init__(self, n: int):
        self.calls, self.n = 0, n

    def weights(self, batch, valid, ce, outputs):
        self.calls += 1
        if self.calls > self.n:
            raise KeyboardInterrupt("simulated kill")
        return super().weights(batch, valid, ce, outputs)


def comparable_rows(run_dir: Path) -> list[dict]:
    timing = {"tokens_per_s", "step_s", "peak_mem_mb"}
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in timing} for r in rows]


def test_resume_continues_exactly(tmp_path):
    full = make_trainer(make_cfg(tmp_path / "full"))
    full.train()

    cfg = make_cfg(tmp_path / "resumed")
    crashing = make_trainer(cfg, weight_fn=CrashAfter(4))  # checkpoint at step 3, dies during step 5
    with pytest.raises(KeyboardInterrupt):
        crashing.train()
    assert json.loads((tmp_path / "resumed/metrics.jsonl").read_text().splitlines()[-1])["step"] == 4

    resumed = make_trainer(cfg)
    assert resumed.resume() and resumed.step == 3
    resumed.train()

    assert comparable_rows(tmp_path / "resumed") == comparable_rows(tmp_path / "full")
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_validation_changes_no_state(tmp_path):
    trainer = make_trainer(make_cfg(tmp_path / "run"))
    trainer.train_step()
    params = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    optim = json.dumps({k: str(v) for k, v in trainer.optimizer.state_dict()["state"].items()})
    rng, state = torch.get_rng_state(), trainer.state_dict()
    row = trainer.validate()
    assert row["kind"] == "eval" and all(f"val_ce_h{k}" in row for k in (1, 2, 3))
    assert trainer.model.training
    assert all(torch.equal(params[k], v) for k, v in trainer.model.state_dict().items())
    assert json.dumps({k: str(v) for k, v in trainer.optimizer.state_dict()["state"].items()}) == optim
    assert torch.equal(rng, torch.get_rng_state()) and trainer.state_dict() == state
    assert all(p.grad is None for p in trainer.model.parameters())


class NaNWeight(UniformWeight):
    def weights(self, batch, valid, ce, outputs):
        return torch.full(valid.shape, float("nan"))


def test_non_finite_steps_are_skipped_then_stop(tmp_path):
    trainer = make_trainer(make_cfg(tmp_path / "run", "train.max_bad_steps=2"), weight_fn=NaNWeight())
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    row = trainer.train_step()
    assert row["skipped"] and row["bad_steps"] == 1
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    trainer.train_step()
    with pytest.raises(TrainingDiverged, match="3 non-finite"):
        trainer.train_step()


def captured_grads(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Run one train_step and return the gradients the optimizer was about to apply (Adam's first step
    is ≈ lr·sign(g), which would turn rounding differences of tiny gradients into lr-sized ones)."""
    grads: dict[str, torch.Tensor] = {}
    trainer.optimizer.step = lambda: grads.update(
        {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    )
    trainer.last_row = trainer.train_step()
    return grads


class PositionWeight(UniformWeight):
    """Later positions weigh more: non-uniform, so `mean` normalisation must span the whole step."""

    def weights(self, batch, valid, ce, outputs):
        return valid.float() * (1.0 + torch.arange(valid.shape[1], dtype=torch.float32))[None, :, None]


class CEWeight(UniformWeight):
    """Weights read the detached CE (like Rho-1)."""

    needs_ce = True

    def weights(self, batch, valid, ce, outputs):
        return ce * valid


@pytest.mark.parametrize("weight_fn", [UniformWeight, PositionWeight, CEWeight])
def test_grad_accumulation_matches_one_large_batch(tmp_path, weight_fn):
    one = make_trainer(make_cfg(tmp_path / "a", "train.batch_size=8", "train.grad_accum=1"), weight_fn())
    two = make_trainer(make_cfg(tmp_path / "b", "train.batch_size=4", "train.grad_accum=2"), weight_fn())
    grads_one, grads_two = captured_grads(one), captured_grads(two)
    assert one.last_row["loss"] == pytest.approx(two.last_row["loss"], rel=1e-5)
    assert one.last_row["grad_norm"] == pytest.approx(two.last_row["grad_norm"], rel=1e-4)
    assert grads_one.keys() == grads_two.keys() and len(grads_one) > 0
    for name, g in grads_one.items():
        torch.testing.assert_close(g, grads_two[name], rtol=1e-4, atol=1e-7, msg=name)


def test_corrupt_checkpoint_is_reported(tmp_path):
    cfg = make_cfg(tmp_path / "run", "train.max_steps=3")
    make_trainer(cfg).train()
    weights = tmp_path / "run/checkpoints/step_000003/model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10:] = b"\x00" * 10
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        make_trainer(cfg).resume()


def test_resume_refuses_a_different_config(tmp_path):
    make_trainer(make_cfg(tmp_path / "run", "train.max_steps=3")).train()
    with pytest.raises(ValueError, match="different config"):
        make_trainer(make_cfg(tmp_path / "run", "train.max_steps=3", "optim.lr=1e-4")).resume()


def test_bf16_autocast_trains(tmp_path):
    trainer = make_trainer(make_cfg(tmp_path / "run", "train.precision=bf16"))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    rows = [trainer.train_step() for _ in range(3)]
    assert all(not r["skipped"] and r["loss"] > 0 for r in rows)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # autocast keeps fp32 master weights
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(before[k], v)]
    assert len(changed) == len(before)
