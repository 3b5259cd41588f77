"""A tiny training run with leap heads (model.head_offsets=[1,2,4]) end to end: every micro-batch's weights see the
offset targets, validation and the final checkpoint hold them, and the saved model reloads with its offsets."""

from __future__ import annotations

import json

import pytest
import torch
from test_trainer import make_cfg, make_trainer

from wmtp.model.checkpoints import META_FILE, load_model_dir
from wmtp.model.loss import mtp_targets
from wmtp.train.state import latest_checkpoint
from wmtp.train.trainer import Trainer
from wmtp.weighting.uniform import UniformWeight

pytestmark = pytest.mark.usefixtures("one_thread")

OFFSETS = (1, 2, 4)


class RecordingUniform(UniformWeight):
    """Uniform weights that keep every (batch, valid) the trainer hands them."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[dict, torch.Tensor]] = []

    def weights(self, batch, valid, ce, outputs):
        self.seen.append((batch, valid))
        return super().weights(batch, valid, ce, outputs)


def train_leap(run_dir) -> tuple[Trainer, RecordingUniform]:
    cfg = make_cfg(run_dir, "model.head_offsets=[1,2,4]", "train.max_steps=3")
    weight_fn = RecordingUniform()
    trainer = make_trainer(cfg, weight_fn=weight_fn)
    assert trainer.model.head_offsets == OFFSETS
    trainer.train()
    return trainer, weight_fn


def test_training_with_leap_heads_weights_see_their_targets(tmp_path):
    _, weight_fn = train_leap(tmp_path / "run")
    assert weight_fn.seen
    for batch, valid in weight_fn.seen:
        expected = mtp_targets(batch["input_ids"], batch["loss_mask"], batch["attention_mask"], 3, OFFSETS)[1]
        assert torch.equal(valid, expected)


def test_training_with_leap_heads_saves_and_reloads_them(tmp_path):
    trainer, _ = train_leap(tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"val_ce_h3", "ce_h3"} <= set().union(*rows)

    checkpoint = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert json.loads((checkpoint / META_FILE).read_text())["head_offsets"] == list(OFFSETS)
    reloaded = load_model_dir(checkpoint)
    assert reloaded.head_offsets == OFFSETS
    for (name, a), (_, b) in zip(trainer.model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name
