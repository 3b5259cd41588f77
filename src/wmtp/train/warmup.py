"""The heads warm-up (train.heads_warmup_steps): the trunk frozen while new heads learn (Medusa-1).

Frozen parameters have requires_grad=False for the step, so the trunk gets no gradient (its backward is not
run) and AdamW skips them: no update, no weight decay, moments and step counts untouched.
"""

from __future__ import annotations

from torch import nn
from torch.distributed.fsdp import FSDPModule

from wmtp.model.mtp import MTPModel


def freeze_trunk(model: MTPModel) -> list[nn.Parameter]:
    """Set requires_grad=False on the trunk's trainable parameters (embeddings, tied unembedding, final norm,
    every trunk block, LoRA adapters inside it); returns them for `thaw`. The extra heads (model.heads) and a
    value head are not part of the trunk."""
    frozen = [p for p in model.trunk.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    return frozen


def thaw(model: MTPModel, params: list[nn.Parameter]) -> None:
    """Undo `freeze_trunk`. Under FSDP2 a trunk block that ran no backward can stay unsharded, and its cached
    unsharded parameters keep requires_grad=False (the next unshard would not copy the flag): resharding every
    trunk block makes its next forward gather parameters that require gradients again."""
    for p in params:
        p.requires_grad_(True)
    if params:
        for module in model.trunk.modules():
            if isinstance(module, FSDPModule):
                module.reshard()
