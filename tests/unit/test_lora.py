"""LoRA through peft: the model is unchanged at step 0, training moves only the adapters, merging gives a plain
MTPModel with the same logits that saves and loads back."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from wmtp.config import load_config
from wmtp.data.collate import EncodedRecord
from wmtp.model.checkpoints import load_model_dir, save_model_dir
from wmtp.model.mtp import MTPModel
from wmtp.train.memory import estimate_memory
from wmtp.train.trainer import Trainer
from wmtp.weighting.uniform import UniformWeight

pytest.importorskip("peft")
from wmtp.model.lora import apply_lora, merge_lora  # noqa: E402

VOCAB = 61


def records(n: int) -> list[EncodedRecord]:
    rng = random.Random(0)
    return [EncodedRecord(id=f"r{i}", input_ids=[1] + [rng.randint(3, VOCAB - 1) for _ in range(14)] + [2],
                          n_prompt=3, is_correct=True) for i in range(n)]


def test_lora_trains_adapters_only_and_merges(tmp_path):
    cfg = load_config(None, [
        f"run_dir={tmp_path / 'run'}", "model.d_model=32", "model.n_layers=2", "model.n_heads=3",
        "model.n_attn_heads=4", "model.lora.rank=4", "train.batch_size=4", "train.progress=false",
        "optim.lr=1e-2", "optim.warmup_steps=1",
    ])
    torch.manual_seed(0)
    model = MTPModel.from_config(cfg.model, vocab_size=VOCAB, pad_id=0, bos_id=1, eos_id=2)
    ids = torch.tensor([r.input_ids for r in records(2)])
    with torch.no_grad():
        plain = model(ids)
    apply_lora(model, cfg.model.lora)
    lora = {n for n, p in model.named_parameters() if p.requires_grad}
    assert lora and all(".lora_" in n for n in lora)
    assert any(n.startswith("heads.") for n in lora) and any(".layers.0." in n for n in lora)
    with torch.no_grad():
        torch.testing.assert_close(model(ids), plain, rtol=0, atol=0)  # B = 0 at the start
    n_lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert estimate_memory(model, cfg).grads == 4 * n_lora

    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if n not in lora}
    trainer = Trainer(cfg, model=model, weight_fn=UniformWeight(), train_data=records(12), valid_data=records(2),
                      pad_id=0, run_dir=Path(cfg.run_dir))
    assert sum(p.numel() for g in trainer.optimizer.param_groups for p in g["params"]) == n_lora
    rows = [trainer.train_step() for _ in range(3)]
    assert all(r["grad_norm"] > 0 and not r["skipped"] for r in rows)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)  # not even the unembedding
    with torch.no_grad():
        tuned = model(ids)
    assert (tuned - plain).abs().max() > 1e-3

    merge_lora(model)
    assert set(model.state_dict()) == set(MTPModel.from_config(cfg.model, vocab_size=VOCAB, pad_id=0, bos_id=1,
                                                                eos_id=2).state_dict())
    loaded = load_model_dir(save_model_dir(model, tmp_path / "merged"))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), tuned, rtol=0, atol=1e-5)
        torch.testing.assert_close(loaded(ids), tuned, rtol=0, atol=1e-5)
