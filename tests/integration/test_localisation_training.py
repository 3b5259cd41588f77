"""The trainer's localisation metrics (eval rows) and EOS shares (train rows) on a tiny model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from wmtp.config import load_config
from wmtp.data.collate import EncodedRecord
from wmtp.model.mtp import MTPModel
from wmtp.train.trainer import Trainer
from wmtp.weighting.base import WeightFn
from wmtp.weighting.localisation import at_targets
from wmtp.weighting.uniform import UniformWeight

VOCAB, H = 61, 3


def records(n: int, seed: int) -> list[EncodedRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.randint(10, 20)
        ids = [1] + [rng.randint(3, VOCAB - 1) for _ in range(length - 2)] + [2]
        out.append(EncodedRecord(id=f"r{i}", input_ids=ids, n_prompt=rng.randint(1, 5), is_correct=i % 2 == 0))
    return out


def annotate(batch: dict) -> dict:
    """decisive: completion tokens with an id divisible by 3; has_spans: every row but the last."""
    batch["decisive"] = batch["loss_mask"] & (batch["input_ids"] % 3 == 0)
    batch["has_spans"] = torch.arange(len(batch["ids"])) < len(batch["ids"]) - 1
    return batch


class AnnotatedTrainer(Trainer):
    """Validation batches carrying `decisive` / `has_spans`, as the collator gives annotated records."""

    def batches(self, records, limit=None):
        return (annotate(b) for b in super().batches(records, limit))


class DecisiveWeight(WeightFn):
    """Weight 5 on entries whose target is decisive, 1 elsewhere."""

    def weights(self, batch, valid, ce, outputs):
        return 1.0 + 4.0 * at_targets(annotate(batch)["decisive"], valid.shape[-1]).float()


class CEWeight(WeightFn):
    """Weights = the CE it is given (needs_ce); remembers the last validation CE."""

    needs_ce = True

    def weights(self, batch, valid, ce, outputs):
        return ce

    def validation_weights(self, batch, valid, ce, outputs):
        self.seen = (valid, ce)
        return ce


def trainer(tmp_path: Path, weight_fn: WeightFn, cls: type[Trainer] = AnnotatedTrainer, *overrides: str) -> Trainer:
    cfg = load_config(None, [f"run_dir={tmp_path}", "model.d_model=32", "model.n_layers=2", f"model.n_heads={H}",
                             "model.n_attn_heads=4", "train.batch_size=4", "train.max_steps=2", "train.eval_every=2",
                             "train.ckpt_every=2", "train.progress=false", "train.ce_chunk_tokens=16",
                             "data.train_on=all", *overrides])
    torch.manual_seed(0)
    model = MTPModel.from_config(cfg.model, vocab_size=VOCAB, pad_id=0, bos_id=1, eos_id=2)
    return cls(cfg, model=model, weight_fn=weight_fn, train_data=records(16, 1), valid_data=records(10, 2), pad_id=0,
               run_dir=tmp_path)


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_uniform_gives_half_and_one_and_equal_eos_shares(tmp_path):
    trainer(tmp_path, UniformWeight()).train()
    logged = rows(tmp_path)
    evals = [r for r in logged if r["kind"] == "eval"]
    assert evals and all(r["loc_auc_incorrect"] == 0.5 and r["loc_auc_correct"] == 0.5 for r in evals)
    assert all(r["loc_lift_incorrect"] == 1.0 and r[f"loc_lift_correct_h{H}"] == 1.0 for r in evals)
    train = [r for r in logged if r["kind"] == "train"]
    assert train and all(0 < r["eos_entry_share"] < 1 and r["eos_share"] == r["eos_entry_share"] for r in train)


def test_weight_on_decisive_targets_is_found(tmp_path):
    t = trainer(tmp_path, DecisiveWeight(), AnnotatedTrainer, "train.grad_accum=2")
    row = t.validate()
    for name in ("incorrect", "correct"):
        assert row[f"loc_auc_{name}"] == 1.0 and all(row[f"loc_auc_{name}_h{k}"] == 1.0 for k in range(1, H + 1))
        assert row[f"loc_lift_{name}"] > 1.0
    train_row = t.train_step()  # two micro-batches: shares over both
    assert 0 < train_row["eos_share"] < train_row["eos_entry_share"]  # EOS (id 2) is never decisive: weight 1 < 5


def test_ce_weights_read_every_valid_entry_and_val_loss_is_unchanged(tmp_path):
    plain = trainer(tmp_path / "plain", UniformWeight(), Trainer).validate()
    t = trainer(tmp_path / "ce", CEWeight())
    rng, state = torch.get_rng_state(), t.state_dict()
    row = t.validate()
    valid, ce = t.weight_fn.seen
    assert bool((ce[valid] > 0).all()) and bool((ce[~valid] == 0).all())  # incorrect records too
    assert {k: v for k, v in row.items() if not k.startswith("loc_")} == plain
    assert row["loc_auc_incorrect"] != 0.5
    assert torch.equal(rng, torch.get_rng_state()) and t.state_dict() == state


def test_batches_without_decisive_give_no_localisation(tmp_path):
    row = trainer(tmp_path, UniformWeight(), Trainer).validate()
    assert row["kind"] == "eval" and not any(k.startswith("loc_") for k in row)
