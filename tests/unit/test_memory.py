"""The memory estimate (train/memory.py) against measured peak tensor memory of real training steps on CPU, its
sharding arithmetic, and the refusal when it exceeds the device."""

from __future__ import annotations

import gc
import random
import weakref
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from typer.testing import CliRunner

from wmtp.cli import app
from wmtp.config import load_config
from wmtp.data.collate import EncodedRecord
from wmtp.model.mtp import MTPModel
from wmtp.train.memory import GIB, InsufficientMemory, estimate_memory, report_memory
from wmtp.train.trainer import Trainer
from wmtp.weighting.uniform import UniformWeight

VOCAB = 61


class LiveTensorBytes(TorchDispatchMode):
    """Bytes of live CPU tensor storages: every op's outputs are counted once per storage until the last tensor
    viewing it is freed; `peak` is the maximum. This measures what the estimate models (tensor memory), not the
    process RSS (interpreter, libraries, allocator caches)."""

    def __init__(self):
        super().__init__()
        self.storages: dict[int, list[int]] = {}  # data_ptr -> [live tensors, bytes]
        self.current = self.peak = 0

    def track(self, t: torch.Tensor) -> None:
        key = t.untyped_storage().data_ptr()
        if key == 0:
            return
        entry = self.storages.get(key)
        if entry is None:
            entry = self.storages[key] = [0, t.untyped_storage().nbytes()]
            self.current += entry[1]
            self.peak = max(self.peak, self.current)
        entry[0] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        entry = self.storages[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self.storages[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out


def test_tracker_counts_saved_activations_and_frees():
    lin = torch.nn.Linear(100, 1000)
    x = torch.randn(64, 100)
    weights = 4 * (1000 * 100 + 1000)
    with LiveTensorBytes() as tr:
        for p in lin.parameters():
            tr.track(p)  # views of the weights (its transpose) are then not counted again
        y = torch.tanh(lin(x))  # the addmm output is freed (tanh saves its own result)
        gc.collect()
        assert tr.current == weights + 64 * 1000 * 4
        del y
        gc.collect()
        assert tr.current == weights and tr.peak == weights + 2 * 64 * 1000 * 4


def make_trainer(tmp_path: Path, *overrides: str) -> Trainer:
    cfg = load_config(None, [
        f"run_dir={tmp_path / 'run'}", "model.n_attn_heads=4", "model.n_heads=3", "train.progress=false",
        "optim.warmup_steps=1", *overrides,
    ])
    torch.manual_seed(0)
    model = MTPModel.from_config(cfg.model, vocab_size=VOCAB, pad_id=0, bos_id=1, eos_id=2)
    rng, L = random.Random(0), cfg.data.max_len  # full-length records: the estimate's worst case
    records = [EncodedRecord(id=f"r{i}", input_ids=[1] + [rng.randint(3, VOCAB - 1) for _ in range(L - 2)] + [2],
                             n_prompt=3, is_correct=True) for i in range(2 * cfg.train.batch_size)]
    return Trainer(cfg, model=model, weight_fn=UniformWeight(), train_data=records, valid_data=records[:2],
                   pad_id=0, run_dir=Path(cfg.run_dir))


def measured_peak(trainer: Trainer) -> int:
    """Peak tensor bytes of the second training step (the first creates the AdamW state), counting the weights
    and optimizer state that exist before it."""
    trainer.train_step()
    gc.collect()
    with LiveTensorBytes() as tr:
        for p in trainer.model.parameters():
            tr.track(p)
        for state in trainer.optimizer.state.values():
            for v in state.values():
                if isinstance(v, torch.Tensor) and v.dim() > 0:
                    tr.track(v)
        trainer.train_step()
    return tr.peak


@pytest.mark.parametrize("overrides", [
    ("model.d_model=64", "model.n_layers=2", "data.max_len=64", "train.batch_size=8"),
    ("model.d_model=64", "model.n_layers=4", "data.max_len=64", "train.batch_size=8",
     "train.activation_checkpointing=true"),
    ("model.d_model=128", "model.n_layers=3", "data.max_len=48", "train.batch_size=6", "train.ce_chunk_tokens=64"),
])
def test_estimate_within_30_percent_of_measured_peak(tmp_path, overrides):
    trainer = make_trainer(tmp_path, *overrides)
    estimate = estimate_memory(trainer.model, trainer.cfg).peak
    measured = measured_peak(trainer)
    weights_and_adam = 3 * 4 * sum(p.numel() for p in trainer.model.parameters())
    assert measured > 1.5 * weights_and_adam  # activations and gradients are a real part of what is compared
    assert abs(estimate - measured) <= 0.3 * measured, (estimate, measured)


def test_activation_checkpointing_lowers_the_measured_peak_and_the_estimate(tmp_path):
    base = ("model.d_model=64", "model.n_layers=4", "data.max_len=64", "train.batch_size=8")
    plain, ckpt = make_trainer(tmp_path / "a", *base), make_trainer(tmp_path / "b", *base,
                                                                    "train.activation_checkpointing=true")
    assert measured_peak(ckpt) < 0.85 * measured_peak(plain)
    assert estimate_memory(ckpt.model, ckpt.cfg).peak < 0.85 * estimate_memory(plain.model, plain.cfg).peak


def test_fsdp_shards_blocks_and_replicates_the_root(tmp_path):
    trainer = make_trainer(tmp_path, "model.d_model=64", "model.tie_embeddings=false")
    model, cfg = trainer.model, trainer.cfg
    root = sum(p.numel() for n, p in model.named_parameters() if ".layers." not in n and not n.startswith("heads."))
    blocks = sum(p.numel() for p in model.parameters()) - root
    one, four = estimate_memory(model, cfg, world_size=1), estimate_memory(model, cfg, world_size=4)
    assert one.params == 4 * (blocks + root) and one.optimizer == 2 * one.params
    assert four.params == 4 * (-(-blocks // 4) + root) and four.fsdp_buffers > 0 == one.fsdp_buffers
    assert four.peak < one.peak


def test_refuses_when_the_estimate_exceeds_the_device(tmp_path):
    trainer = make_trainer(tmp_path, "model.d_model=64", "train.device_memory_gb=0.001")
    with pytest.raises(InsufficientMemory, match=r"exceeds the device memory 0\.00 GiB[\s\S]*activation_checkpointing"):
        report_memory(trainer.model, trainer.cfg, world_size=1, device=torch.device("cpu"))
    fits = load_config(None, ["train.device_memory_gb=1"])
    assert report_memory(trainer.model, fits, world_size=1, device=torch.device("cpu")).peak < GIB


def test_memory_command_on_presets_from_config_alone():
    runner = CliRunner()
    ok = runner.invoke(app, ["memory", "-c", "7b-fsdp", "--world-size", "4", "--device-gib", "44"])
    assert ok.exit_code == 0, ok.output
    assert "world size 4" in ok.output and "estimated peak" in ok.output
    refused = runner.invoke(app, ["memory", "-c", "7b-fsdp", "--device-gib", "44"])
    assert refused.exit_code == 2 and "exceeds the device memory" in refused.output
    assert runner.invoke(app, ["memory", "-c", "1b", "--device-gib", "38"]).exit_code == 0
