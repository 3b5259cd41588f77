"""Training under torchrun: FSDP2 per block and head, global reductions, data slices, sharded (DCP) checkpoints.

With world size W > 1 (set by torchrun):
- every transformer block (trunk blocks and extra head blocks) is `fully_shard`ed: its parameters, gradients and
  AdamW state are split over the W ranks; a MixedPrecisionPolicy computes in `distributed.param_dtype` and
  reduces gradients in fp32.
- the root parameters (token embedding, final norm, unembedding, value head) stay replicated. The sequential-head
  step (train/step.py) writes the unembedding gradient by hand, outside any module's forward, so these gradients
  are summed over ranks with one all-reduce per tensor instead of by FSDP.
- gradients are summed, not averaged: each rank's loss is already divided by the global number of valid entries,
  so the sum over ranks is the gradient of the global loss.
- each rank takes a contiguous slice of every global micro-batch (train.batch_size records); the step's valid
  count and weight total are all-reduced, so weights and their normalisation are those of the global batch.
World size 1 is the degenerate case of the same path (as degree-1 FSDP is a no-op in torchtitan): `Distributed`
with one rank shards nothing, reduces nothing, and writes the single-process checkpoint layout of train/state.py.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor
from transformers import PreTrainedTokenizerBase

from wmtp.config import ConfigError, DistributedConfig
from wmtp.model.checkpoints import META_FILE, build_from_meta, model_meta, save_model_dir
from wmtp.model.mtp import MTPModel
from wmtp.train.state import (
    MANIFEST,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    sha256_file,
    verify_checkpoint,
)

DCP_METADATA = ".metadata"  # written by torch.distributed.checkpoint; marks a sharded checkpoint


def world_size_from_env() -> int:
    """WORLD_SIZE set by torchrun (1 when started as a plain process)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class Distributed:
    """This process's place in the job and the collectives the trainer needs (world size 1: identities)."""

    rank: int
    world_size: int
    mesh: DeviceMesh | None  # None for a single process

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.world_size > 1

    def batch_slice(self, batch_size: int) -> slice:
        """This rank's contiguous share of a global micro-batch of `batch_size` records."""
        if batch_size % self.world_size:
            raise ConfigError(f"train.batch_size={batch_size} must be divisible by the world size {self.world_size}")
        per = batch_size // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def sum(self, *values: float) -> list[float]:
        """Sums over ranks of a few scalars (float64, one all-reduce; a single process gets them back as given)."""
        if not self.sharded:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.mesh.device_type)
        dist.all_reduce(t)
        return t.tolist()

    def sum_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over ranks of a small tensor (a new tensor of t's dtype and device)."""
        if not self.sharded:
            return t
        out = t.detach().to(self.mesh.device_type, torch.float64, copy=True)
        dist.all_reduce(out)
        return out.to(t.device, t.dtype)

    def barrier(self) -> None:
        if self.sharded:
            dist.barrier()

    def shard(self, model: MTPModel, *, param_dtype: str) -> None:
        """FSDP2 over the ranks (apply_fsdp); nothing for a single process."""
        if self.sharded:
            apply_fsdp(model, self.mesh, param_dtype=param_dtype)

    def sync_grads(self, model: nn.Module) -> None:
        """Sum the replicated parameters' gradients over ranks (sync_replicated_grads)."""
        if self.sharded:
            sync_replicated_grads(model)

    def clip_grad_norm(self, params: list[nn.Parameter], max_norm: float) -> float:
        """The gradient norm of `params` (over all ranks), their gradients scaled to at most max_norm (torch's
        rule on one process)."""
        params = [p for p in params if p.grad is not None]
        if not params:
            return 0.0
        if self.sharded:
            return clip_grad_norm(params, max_norm)
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    def save_checkpoint(self, checkpoints_dir: Path, **kwargs: Any) -> Path:
        """Sharded (DCP) checkpoints under torchrun, the single-process layout otherwise (train/state.py)."""
        if self.sharded:
            return save_checkpoint_dcp(checkpoints_dir, env=self, **kwargs)
        return save_checkpoint(checkpoints_dir, **kwargs)

    def load_checkpoint(self, path: Path, *, model: MTPModel, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Either layout, on any number of processes; returns the trainer state."""
        if is_dcp_checkpoint(path):
            return load_checkpoint_dcp(path, model=model, optimizer=optimizer, rank=self.rank)
        return load_checkpoint(path, model=model, optimizer=optimizer)

    def save_model_dir(self, model: MTPModel, directory: Path, tokenizer: PreTrainedTokenizerBase | None) -> None:
        """The final model directory: gathered from the shards under torchrun (then the process group ends)."""
        if self.sharded:
            save_model_dir_gathered(self, model, directory, tokenizer)
            teardown()
        else:
            save_model_dir(model, directory, tokenizer)


def init_distributed(cfg: DistributedConfig, device: torch.device) -> Distributed:
    """Join the torchrun job (env:// rendezvous) and build a 1-D device mesh over all ranks; a plain process
    (WORLD_SIZE unset or 1) is rank 0 of 1."""
    if world_size_from_env() == 1:
        return Distributed(0, 1, None)
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":  # one GPU per process, before NCCL binds to a device
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    return Distributed(dist.get_rank(), dist.get_world_size(), mesh)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def blocks(model: MTPModel) -> list[nn.Module]:
    """Every transformer block: the trunk's (head 1 included when it is the last one) and the extra heads'."""
    return [*model.decoder.layers, *model.heads]


def apply_activation_checkpointing(model: MTPModel) -> None:
    """Recompute each block's activations during its backward (module names and state dicts are unchanged)."""
    from torch.distributed._composable import checkpoint

    for block in blocks(model):
        checkpoint(block)


def apply_fsdp(model: MTPModel, mesh: DeviceMesh, *, param_dtype: str) -> None:
    """fully_shard each block (module docstring); gradients are summed over ranks, reduced in fp32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16 if param_dtype == "bf16" else torch.float32, reduce_dtype=torch.float32
    )
    for block in blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=policy)
        block.set_gradient_divide_factor(1.0)
        block.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no pre-multiplied sum)


def replicated_params(model: nn.Module) -> list[nn.Parameter]:
    """Parameters FSDP does not shard (the root's); each appears once even when tied."""
    return [p for p in model.parameters() if not isinstance(p, DTensor)]


def sync_replicated_grads(model: nn.Module) -> None:
    """Sum the replicated parameters' gradients over ranks (in place)."""
    for p in replicated_params(model):
        if p.grad is not None:
            dist.all_reduce(p.grad)


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> float:
    """Global gradient norm of `params` (sharded and replicated, non-empty), then scale their gradients to at most
    max_norm (the rule of torch.nn.utils.clip_grad_norm_: coefficient max_norm / (norm + 1e-6), capped at 1)."""
    sharded = torch.zeros((), dtype=torch.float64, device=params[0].device)
    replicated = torch.zeros_like(sharded)
    grads = [p.grad for p in params if p.grad is not None]
    for g in grads:
        if isinstance(g, DTensor):
            sharded += g.to_local().double().pow(2).sum()
        else:
            replicated += g.double().pow(2).sum()  # identical on every rank after sync_replicated_grads
    dist.all_reduce(sharded)
    norm = (sharded + replicated).sqrt()
    coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        (g.to_local() if isinstance(g, DTensor) else g).mul_(coef.to(g.dtype))
    return norm.item()


# ---- sharded checkpoints ---------------------------------------------------------------------------------------


def is_dcp_checkpoint(path: Path) -> bool:
    return (path / DCP_METADATA).is_file()


def save_checkpoint_dcp(
    checkpoints_dir: Path,
    *,
    env: Distributed,
    model: MTPModel,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    keep: int,
    name_step: int,
) -> Path:
    """Every rank writes its shards (torch.distributed.checkpoint) and RNG state into one temporary directory on a
    shared filesystem; rank 0 adds trainer_state.json, wmtp_model.json and the sha256 manifest, then renames it to
    step_{name_step:06d} and points `latest` at it (the layout of train/state.py)."""
    from torch.distributed.checkpoint import save
    from torch.distributed.checkpoint.state_dict import get_state_dict

    final = checkpoints_dir / f"step_{name_step:06d}"
    tmp = checkpoints_dir / f".tmp-{final.name}-dcp"
    if env.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    env.barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=str(tmp))
    torch.save(rng_state(), tmp / f"rng_rank{env.rank}.pt")
    env.barrier()
    if env.is_main:
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
        (tmp / META_FILE).write_text(json.dumps(model_meta(model), indent=1))
        files = sorted(p.name for p in tmp.iterdir())
        (tmp / MANIFEST).write_text(json.dumps({name: sha256_file(tmp / name) for name in files}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        pointer = checkpoints_dir / ".latest-dcp"
        pointer.write_text(final.name)
        os.replace(pointer, checkpoints_dir / "latest")
        for old in sorted(checkpoints_dir.glob("step_*"))[:-keep]:
            shutil.rmtree(old)
    env.barrier()
    return final


def load_checkpoint_dcp(
    path: Path, *, model: MTPModel, optimizer: torch.optim.Optimizer, rank: int = 0
) -> dict[str, Any]:
    """Load a sharded checkpoint into `model` and `optimizer` on any number of ranks (one process included:
    the shards are resharded to the model's current layout); restore this rank's RNG; return the trainer state."""
    from torch.distributed.checkpoint import load
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    verify_checkpoint(path)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optimizer": optim_sd}
    load(state, checkpoint_id=str(path), no_dist=not dist.is_initialized())
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    rng_file = path / f"rng_rank{rank}.pt"
    set_rng_state(torch.load(rng_file if rng_file.is_file() else path / "rng_rank0.pt", weights_only=False))
    return json.loads((path / "trainer_state.json").read_text())


def save_model_dir_gathered(
    env: Distributed, model: MTPModel, directory: Path, tokenizer: PreTrainedTokenizerBase | None = None
) -> None:
    """The final model directory of a sharded run: every rank takes part in gathering the full parameters (to CPU),
    rank 0 writes them with `save_model_dir` (the same files as a single-process run)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if env.is_main:
        plain = build_from_meta(model_meta(model))
        plain.load_state_dict(full, strict=True)
        save_model_dir(plain, directory, tokenizer)
    env.barrier()
