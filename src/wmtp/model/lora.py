"""LoRA fine-tuning of an MTPModel through peft: adapters on every block's linear layers, the rest frozen.

A targeted linear W (trunk blocks and head blocks) becomes W + (α/r)·B·A with A: [r, d_in], B: [d_out, r]
(B starts at 0, so the model is unchanged at step 0). Embedding, final norm and unembedding are frozen; only A
and B receive gradients and AdamW state, which is what makes a ≈7B model trainable on one GPU.
`merge_lora` folds the adapters back into W, leaving a plain MTPModel (same state-dict keys as before).
"""

from __future__ import annotations

from torch import nn

from wmtp.config import LoraConfig
from wmtp.model.mtp import MTPModel


def _blocks(model: MTPModel) -> list[nn.Module]:
    return [*model.decoder.layers, *model.heads]


def apply_lora(model: MTPModel, cfg: LoraConfig) -> None:
    """Freeze every parameter, then add trainable adapters to the `cfg.targets` linears of every block."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

    for p in model.parameters():
        p.requires_grad_(False)
    peft_cfg = PeftLoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.targets)
    for block in _blocks(model):
        inject_adapter_in_model(peft_cfg, block)
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_" in name)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"model.lora.targets={cfg.targets} matched no linear layer of the blocks")


def merge_lora(model: MTPModel) -> None:
    """Fold every adapter into its base weight and put the plain linear back (in place)."""
    from peft.tuners.lora import LoraLayer

    for block in _blocks(model):
        for name, module in list(block.named_modules()):
            if isinstance(module, LoraLayer):
                module.merge()
                parent_name, _, child = name.rpartition(".")
                setattr(block.get_submodule(parent_name) if parent_name else block, child, module.get_base_layer())
    for p in model.parameters():
        p.requires_grad_(True)
