"""AdamW with decay on matrices only, and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from wmtp.config import OptimConfig


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, *, extra_groups: list[dict[str, Any]] | None = None
) -> torch.optim.AdamW:
    """AdamW (fused where torch has the kernel: `fusable`); weight decay applies to parameters with ≥ 2 dims (not norms
    or biases). `extra_groups` (a weighting's modules, e.g. a value head: WeightFn.param_groups) come last with their
    own settings, and their parameters leave the two default groups."""
    extra_groups = extra_groups or []
    extra_ids = {id(p) for g in extra_groups for p in g["params"]}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in extra_ids]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        *extra_groups,
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fusable(model))


def restore_kernel_choice(optimizer: torch.optim.Optimizer, saved: list[tuple[Any, Any]]) -> None:
    """Put back each param group's (fused, foreach) after `load_state_dict`, which takes them from the checkpoint (a
    checkpoint written before AdamW was fused would silently switch the kernel off). saved: from `kernel_choice`."""
    for group, (fused, foreach) in zip(optimizer.param_groups, saved):
        group["fused"], group["foreach"] = fused, foreach


def kernel_choice(optimizer: torch.optim.Optimizer) -> list[tuple[Any, Any]]:
    """Each param group's (fused, foreach), for `restore_kernel_choice`."""
    return [(g.get("fused"), g.get("foreach")) for g in optimizer.param_groups]


def fusable(model: nn.Module) -> bool:
    """Whether torch's fused AdamW kernel can step every parameter (one kernel for all tensors instead of a loop of
    elementwise ops: ≈5× faster on CPU): floating point, on a device it supports (CPU, CUDA, MPS, XPU), and no
    DTensor (FSDP2: torch 2.13's fused kernel refuses the mix of sharded DTensor and replicated plain parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return bool(params) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda", "mps", "xpu") and not isinstance(p, DTensor)
        for p in params
    )


def lr_at(step: int, *, cfg: OptimConfig, max_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based).
    1) linear warmup to cfg.lr over warmup_steps; 2) cosine decay to min_lr_ratio·lr at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_steps = max(max_steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / decay_steps, 1.0)
    floor = cfg.min_lr_ratio * cfg.lr
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * progress))
