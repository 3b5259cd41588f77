"""build_optimizer: fused AdamW where torch has the kernel, equal to the unfused loop within float tolerance."""

import torch
from oracles import tiny_model

from wmtp.config import OptimConfig
from wmtp.train.optim import build_optimizer, kernel_choice, restore_kernel_choice


def test_optimizer_is_fused_on_cpu_and_steps_like_unfused_adamw():
    cfg = OptimConfig(lr=1e-2, weight_decay=0.1)
    fused_model, plain_model = tiny_model(2, seed=3), tiny_model(2, seed=3)
    fused = build_optimizer(fused_model, cfg)
    assert fused.defaults["fused"] is True
    plain = build_optimizer(plain_model, cfg)
    for group in plain.param_groups:
        group["fused"] = False
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p, q in zip(fused_model.parameters(), plain_model.parameters()):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        fused.step()
        plain.step()
    moved = 0
    for (name, p), q, p0 in zip(fused_model.named_parameters(), plain_model.parameters(),
                                tiny_model(2, seed=3).parameters()):  # fmt: skip
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=name)
        moved += not torch.equal(p, p0)
    assert moved == len(list(plain_model.parameters()))  # every parameter stepped: the comparison is not vacuous


def test_loading_an_unfused_checkpoint_keeps_this_builds_fused_kernel():
    """torch's load_state_dict takes fused/foreach from the checkpoint: an older run resumed would lose the kernel."""
    old_model, model = tiny_model(2, seed=1), tiny_model(2, seed=1)
    old = build_optimizer(old_model, OptimConfig())
    for group in old.param_groups:  # as written before AdamW was fused
        group["fused"] = None
    for p in old_model.parameters():
        p.grad = torch.ones_like(p)
    old.step()
    optimizer = build_optimizer(model, OptimConfig())
    saved = kernel_choice(optimizer)
    optimizer.load_state_dict(old.state_dict())
    assert all(g["fused"] is None for g in optimizer.param_groups)  # what torch does
    restore_kernel_choice(optimizer, saved)
    assert all(g["fused"] is True for g in optimizer.param_groups)
