"""train.heads_warmup_steps: the trunk is frozen (no update, no AdamW state) for the first N steps while the
extra heads learn, then everything trains; resuming inside the warm-up continues it exactly."""

from __future__ import annotations

import pytest
import torch
from test_trainer import CrashAfter, comparable_rows, make_cfg, make_trainer


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    return {name for name, p in module.named_parameters() if not torch.equal(p, before[name])}


@pytest.mark.parametrize("head1_is_trunk_layer", [True, False])
def test_trunk_is_frozen_during_the_warmup_and_trains_after(tmp_path, head1_is_trunk_layer):
    cfg = make_cfg(tmp_path / "run", "train.heads_warmup_steps=2", "optim.weight_decay=0.1",
                   f"model.head1_is_trunk_layer={str(head1_is_trunk_layer).lower()}")
    trainer = make_trainer(cfg)
    model = trainer.model
    trunk_names = {name for name, _ in model.trunk.named_parameters()}
    for step in (1, 2):
        trunk, heads = snapshot(model.trunk), snapshot(model.heads)
        row = trainer.train_step()
        assert row["step"] == step and not row["skipped"]
        assert changed(model.trunk, trunk) == set()  # no update, not even weight decay
        assert changed(model.heads, heads) == {name for name, _ in model.heads.named_parameters()}
        assert all(p.requires_grad for p in model.parameters())  # thawed after the step
        # AdamW never saw a trunk gradient: no moments for any trunk parameter
        assert not any(p in trainer.optimizer.state for p in model.trunk.parameters())
    trunk = snapshot(model.trunk)
    trainer.train_step()
    assert changed(model.trunk, trunk) == trunk_names
    steps = {int(s["step"]) for p, s in trainer.optimizer.state.items() if any(p is q for q in model.trunk.parameters())}
    assert steps == {1}  # the trunk's first AdamW step is step 3 of training
    assert {int(trainer.optimizer.state[p]["step"]) for p in model.heads.parameters()} == {3}


def test_warmup_changes_training_and_resumes_exactly(tmp_path):
    plain = make_trainer(make_cfg(tmp_path / "plain"))
    plain.train()
    full = make_trainer(make_cfg(tmp_path / "full", "train.heads_warmup_steps=4"))
    full.train()
    assert comparable_rows(tmp_path / "full") != comparable_rows(tmp_path / "plain")

    cfg = make_cfg(tmp_path / "resumed", "train.heads_warmup_steps=4")
    crashing = make_trainer(cfg, weight_fn=CrashAfter(4))  # checkpoint at step 3 (inside the warm-up), dies at 5
    with pytest.raises(KeyboardInterrupt):
        crashing.train()
    resumed = make_trainer(cfg)
    assert resumed.resume() and resumed.step == 3
    resumed.train()
    assert comparable_rows(tmp_path / "resumed") == comparable_rows(tmp_path / "full")
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
