"""Memory estimate per device for one training run: parameters, gradients, AdamW state, activations.

Model P = P_blocks (trunk blocks and head blocks, sharded by FSDP over W ranks) + P_root (embedding, final norm,
untied unembedding: replicated on every rank). Bytes per device, fp32 master weights:
    params = 4·(P_blocks/W + P_root)      grads = the same over trainable parameters (LoRA: adapters only)
    AdamW = 2× grads (exp_avg, exp_avg_sq)
    FSDP (W > 1): two gathered blocks in the compute dtype + one unsharded fp32 block gradient
Activations of one micro-batch of N = (batch_size/W)·max_len tokens, a bytes per activation (2 in bf16):
    block  = N·a·(15·D + 4·F + 2·D_kv)    saved per transformer block: norms, q/k/v and rotated q/k, attention
                                          output, residuals (≈15·D), the SwiGLU MLP (4·F)
    trunk  = n_shared·block (n_shared·N·D·a with activation checkpointing: block inputs only; the recomputed
             block is the head term's while heads run and the trunk-end term's afterwards)
    head   = block + 2·N·D·4              one head at a time (sequential heads) and ∂L/∂z'; in the one pass
                                          (local weights, wmtp.train.step) H·block + 2·N·D·4 + 2·N·H·D·4: every
                                          head block's activations at once, their selected rows and gradients
    CE     = 3·chunk·V·4 + V·D·4          one chunk of logits and its softmax/gradient, the shared unembedding
                                          gradient buffer
The step's peak is the largest of three moments (weights and optimizer state are always there):
    heads     trunk + head + CE + head-block gradients       (sequential head backward)
    trunk end all gradients + one block of activations       (end of the trunk backward)
    optimizer all gradients (one process: fused AdamW, wmtp.train.optim, no per-parameter temporary; FSDP: the
              foreach update, + one fp32 temporary per trained parameter)
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch

from wmtp.config import RunConfig
from wmtp.model.mtp import MTPModel

GIB = 2**30


class InsufficientMemory(RuntimeError):
    """The estimate exceeds the device memory; the message says by how much and what to change."""


@dataclass
class MemoryEstimate:
    """Bytes per device. `peak` = params + optimizer + the largest transient phase."""

    params: int
    grads: int
    optimizer: int
    activations: int
    fsdp_buffers: int
    peak: int
    world_size: int

    def table(self) -> str:
        rows = [
            ("parameters (fp32)", self.params),
            ("gradients", self.grads),
            ("AdamW state", self.optimizer),
            ("activations (one micro-batch)", self.activations),
            ("FSDP gathered blocks", self.fsdp_buffers),
            ("estimated peak", self.peak),
        ]
        unit, scale = ("GiB", GIB) if self.peak >= GIB else ("MiB", 2**20)
        head = f"memory estimate per device (world size {self.world_size}):"
        return "\n".join([head, *(f"  {name:<30} {value / scale:9.3f} {unit}" for name, value in rows)])


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def estimate_memory(model: MTPModel, cfg: RunConfig, *, world_size: int = 1) -> MemoryEstimate:
    """Estimate (module docstring) for `model` trained with `cfg` on `world_size` ranks. Works on a model built
    on the meta device (only shapes are read)."""
    W = world_size
    tc = cfg.train
    trunk_cfg = model.trunk.config
    D, V = trunk_cfg.hidden_size, model.vocab_size
    F = trunk_cfg.intermediate_size
    d_kv = trunk_cfg.num_key_value_heads * (D // trunk_cfg.num_attention_heads)
    blocks = list(model.decoder.layers) + list(model.heads)
    P_blocks = sum(_numel(b) for b in blocks)
    P_block = max(_numel(b) for b in blocks)
    P_head_blocks = sum(  # trained parameters of the head blocks: their gradients exist while heads run
        p.numel() for k in range(1, model.n_heads + 1) for p in model.head_block(k).parameters() if p.requires_grad
    )
    P_root = _numel(model) - P_blocks
    shard = (lambda n: -(-n // W)) if W > 1 else (lambda n: n)

    params = 4 * (shard(P_blocks) + P_root)
    trainable_blocks = sum(p.numel() for b in blocks for p in b.parameters() if p.requires_grad)
    trainable_root = sum(p.numel() for p in model.parameters() if p.requires_grad) - trainable_blocks
    grads = 4 * (shard(trainable_blocks) + trainable_root)  # all parameters, or only LoRA adapters
    optimizer = 2 * grads
    bf16 = tc.precision == "bf16" or (W > 1 and cfg.distributed.param_dtype == "bf16")
    a = 2 if bf16 else 4
    fsdp = 0
    if W > 1:
        fsdp = 2 * P_block * (2 if cfg.distributed.param_dtype == "bf16" else 4) + 4 * P_block

    N = -(-tc.batch_size // W) * cfg.data.max_len
    block = N * a * (15 * D + 4 * F + 2 * d_kv)
    n_shared = len(model.shared_blocks())
    trunk = n_shared * N * D * a if tc.activation_checkpointing else n_shared * block
    held = _heads_held(cfg, model.n_heads)
    head = held * block + 2 * N * D * 4 + (2 * N * held * D * 4 if held > 1 else 0)
    ce = 3 * min(tc.ce_chunk_tokens, N) * V * 4 + V * D * 4
    activations = trunk + head + ce

    heads_phase = activations + 4 * shard(P_head_blocks)
    trunk_end = grads + block + V * D * 4
    optimizer_step = grads if W == 1 else 2 * grads  # fused AdamW only without DTensors (wmtp.train.optim.fusable)
    peak = params + optimizer + fsdp + max(heads_phase, trunk_end, optimizer_step)
    return MemoryEstimate(params, grads, optimizer, activations, fsdp, peak, W)


def _heads_held(cfg: RunConfig, n_heads: int) -> int:
    """Head blocks whose activations the step holds at once: all of them in the one pass, else one."""
    from wmtp.registry import build_weight_fn
    from wmtp.train.step import one_pass

    return n_heads if one_pass(build_weight_fn(cfg.weighting, seed=cfg.seed), cfg.weighting) else 1


def device_memory_bytes(device: torch.device) -> int:
    """Total memory of the device: the GPU's, or the machine's physical RAM for CPU training."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(estimate: MemoryEstimate, *, available: int, cfg: RunConfig) -> None:
    """Refuse (InsufficientMemory) when the estimated peak exceeds the device memory."""
    if estimate.peak <= available:
        return
    hints = []
    if not cfg.train.activation_checkpointing:
        hints.append("train.activation_checkpointing=true")
    hints.append(f"a smaller train.batch_size (now {cfg.train.batch_size}) with a larger train.grad_accum")
    if estimate.world_size == 1:
        hints.append("more GPUs under torchrun (FSDP shards blocks, gradients and AdamW state)")
    raise InsufficientMemory(
        f"estimated peak {estimate.peak / GIB:.2f} GiB per device exceeds the device memory "
        f"{available / GIB:.2f} GiB.\n{estimate.table()}\ntry: " + "; ".join(hints)
        + " (train.check_memory=false skips this check)"
    )


def model_for_estimate(cfg: RunConfig) -> MTPModel:
    """The run's model built on the meta device (shapes only, no memory, no weights read): from config, from a
    pretrained HF trunk's config (a `.gguf` file's metadata), or from a Meta checkpoint's params.json."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from wmtp.data.tokenizer import load_tokenizer
    from wmtp.model.gguf import is_gguf, load_gguf_config
    from wmtp.model.lora import apply_lora
    from wmtp.model.meta_checkpoint import is_meta_checkpoint, read_params, trunk_config

    mc = cfg.model
    with torch.device("meta"):
        if mc.pretrained is not None and is_meta_checkpoint(mc.pretrained):
            trunk = AutoModelForCausalLM.from_config(trunk_config(read_params(mc.pretrained)))
            model = MTPModel.from_trunk(trunk, n_heads=mc.n_heads)
        elif mc.pretrained is not None:
            pretrained = mc.pretrained
            config = load_gguf_config(pretrained) if is_gguf(pretrained) else AutoConfig.from_pretrained(pretrained)
            trunk = AutoModelForCausalLM.from_config(config)
            model = MTPModel.from_trunk(trunk, n_heads=mc.n_heads, head1_is_trunk_layer=mc.head1_is_trunk_layer)
        else:
            vocab = len(load_tokenizer(cfg.data.tokenizer)) if cfg.data.tokenizer is not None else cfg.data.vocab_size
            model = MTPModel.from_config(mc, vocab_size=vocab, pad_id=0, bos_id=1, eos_id=2)
        if mc.lora.rank is not None:
            apply_lora(model, mc.lora)
    return model


def report_memory(
    model: MTPModel, cfg: RunConfig, *, world_size: int, device: torch.device, quiet: bool = False
) -> MemoryEstimate:
    """Print the estimate (rank 0; not when `quiet`) and, with train.check_memory, refuse when it exceeds the
    device memory (quiet or not: a sweep's runs print nothing, since the sweep printed its largest estimate)."""
    estimate = estimate_memory(model, cfg, world_size=world_size)
    if not quiet and int(os.environ.get("RANK", "0")) == 0:
        print(estimate.table(), file=sys.stderr)
    if cfg.train.check_memory:
        gb = cfg.train.device_memory_gb
        check_fits(estimate, available=int(gb * GIB) if gb is not None else device_memory_bytes(device), cfg=cfg)
    return estimate
