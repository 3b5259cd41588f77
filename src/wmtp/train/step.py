"""One micro-batch of weighted MTP: trunk forward, weights, then Meta's sequential per-head backward.

The trunk output z is detached into z'; each head k runs forward on z', its loss Σ coef·ce is
back-propagated at once (freeing that head's activations and chunked logits), accumulating ∂L/∂z'.
Finally z.backward(∂L/∂z') runs the trunk backward once. Peak memory is the trunk's activations plus
one head's, however many heads there are.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from wmtp.config import WeightingConfig
from wmtp.model.loss import linear_ce, mtp_targets, weighted_linear_ce
from wmtp.model.mtp import MTPModel, TrunkContext
from wmtp.weighting.base import WeightFn, normalize_weights


@dataclass
class StepResult:
    """What one micro-batch contributed. loss: the weighted loss (already divided by the step's n_valid).
    ce: Float[B,T,H] unweighted CE (0 where invalid); weights: normalised Float[B,T,H]; valid: Bool[B,T,H]."""

    loss: float
    ce: Tensor
    weights: Tensor
    valid: Tensor
    aux: dict[str, float] = field(default_factory=dict)  # the weighting's aux-loss metrics


def batch_targets(
    batch: dict[str, Any], n_heads: int, *, offsets: Sequence[int] | None = None
) -> tuple[Tensor, Tensor]:
    """`mtp_targets` of a collated batch: (targets Long[B,T,H], valid Bool[B,T,H]); offsets: the model's
    head_offsets (None = 1..n_heads); packed rows (segment_ids) keep targets inside their record."""
    return mtp_targets(batch["input_ids"], batch["loss_mask"], batch["attention_mask"], n_heads, offsets,
                       segment_ids=batch.get("segment_ids"))


def heads_ce(
    model: MTPModel, z: Tensor, ctx: TrunkContext, targets: Tensor, valid: Tensor, *, chunk_tokens: int
) -> Tensor:
    """Per-(t,k) CE Float[B,T,H] of every head on trunk output z (0 where invalid), one head at a time."""
    ce = torch.zeros(valid.shape, dtype=torch.float32, device=z.device)
    for k in range(1, model.n_heads + 1):
        sel = valid[..., k - 1]
        if sel.any():
            h = model.head_hidden(k, z, ctx)[sel]  # [N,D]: only tokens with a target
            ce[..., k - 1][sel] = linear_ce(h, model.unembed, targets[..., k - 1][sel], chunk_tokens=chunk_tokens)
        elif sharded():
            model.head_hidden(k, z, ctx)  # FSDP: every rank runs every head block (its all-gather is collective)
    return ce


def sharded() -> bool:
    """Whether this process is one rank of a distributed job (FSDP collectives need every rank in every block)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def forward_backward(
    model: MTPModel,
    batch: dict[str, Any],
    *,
    weight_fn: WeightFn,
    wcfg: WeightingConfig,
    n_valid_step: int,
    chunk_tokens: int,
    autocast: AbstractContextManager | None = None,
    raw_weights: Tensor | None = None,
    weight_total_step: float | None = None,
    n_tokens_step: int = 0,
) -> StepResult:
    """Accumulate ∂/∂θ of Σ_valid w·ce·λ_k / n_valid_step into .grad for this micro-batch.

    n_valid_step: valid (t,k) entries over all micro-batches of the optimizer step, so that gradient
    accumulation gives the same loss as one large batch. With several micro-batches, the caller passes
    each one's `raw_weights` (from `raw_step_weights`) and their valid sum over the step,
    `weight_total_step`, so that `mean` normalisation is over the whole step; otherwise the weights
    are computed here, sharing the trunk forward.

    The weighting's `forward` (its attached modules) runs on the same detached trunk output: its detached outputs
    feed the weights, and its `aux_loss` (given n_tokens_step, the step's loss-carrying tokens) joins the backward.
    """
    amp = autocast or nullcontext()
    targets, valid = batch_targets(batch, model.n_heads)
    with amp:
        z, ctx = model.trunk_forward(batch["input_ids"], batch["attention_mask"], batch.get("segment_ids"))
    z_detached = z.detach().requires_grad_()
    outputs = weight_fn.forward(model, z_detached, ctx)  # graph into the weighting's modules and z'
    if raw_weights is None:
        ce_first = None
        if weight_fn.needs_ce:
            with torch.no_grad(), amp:
                ce_first = heads_ce(model, z.detach(), ctx, targets, valid, chunk_tokens=chunk_tokens)
        seen = {k: v.detach() for k, v in outputs.items()} if weight_fn.needs_values else {}
        raw_weights = weight_fn.weights(batch, valid, ce_first, seen)
    totals = None if weight_total_step is None else (weight_total_step, n_valid_step)
    weights = normalize_weights(
        raw_weights, valid, mode=wcfg.normalize, clip_min=wcfg.clip_min, clip_max=wcfg.clip_max, totals=totals
    )
    coef = weights / max(n_valid_step, 1)  # detached: weights never carry a graph
    if wcfg.head_coefs is not None:
        coef = coef * torch.tensor(wcfg.head_coefs, dtype=coef.dtype, device=coef.device)

    unembed = model.unembed
    # One [V,D] buffer collects every head's unembedding gradient: autograd would hold a fresh one per head.
    unembed_grad = torch.zeros(unembed.shape, dtype=torch.float32, device=unembed.device)
    ce = torch.zeros(valid.shape, dtype=torch.float32, device=z.device)
    total, any_head = 0.0, False
    for k in range(1, model.n_heads + 1):
        sel = valid[..., k - 1]
        if not sel.any():
            if sharded():  # no target on this rank: still run head k's forward/backward for FSDP's collectives
                with amp:
                    (model.head_hidden(k, z_detached, ctx).sum() * 0.0).backward()
            continue
        with amp:
            h = model.head_hidden(k, z_detached, ctx)[sel]  # [N,D]
            loss_k, ce_k = weighted_linear_ce(
                h,
                unembed.detach(),
                targets[..., k - 1][sel],
                coef[..., k - 1][sel],
                chunk_tokens=chunk_tokens,
                unembed_grad=unembed_grad,
            )
        loss_k.backward()  # frees head k's graph now; ∂L/∂z' accumulates in z_detached.grad
        ce[..., k - 1][sel] = ce_k
        total += loss_k.item()
        any_head = True
    aux = weight_fn.aux_loss(batch, outputs, n_tokens=n_tokens_step)
    if aux is not None:
        aux_loss, aux_metrics = aux
        aux_loss.backward()
    if z_detached.grad is not None and z.requires_grad:  # not with the trunk frozen (train.heads_warmup_steps)
        z.backward(z_detached.grad)
    if (any_head or sharded()) and unembed.requires_grad:  # frozen under LoRA; every rank joins the grad sum
        if unembed.grad is None:
            unembed.grad = unembed_grad.to(unembed.dtype)
        else:
            unembed.grad.add_(unembed_grad)
    return StepResult(loss=total, ce=ce, weights=weights, valid=valid, aux=aux_metrics if aux is not None else {})


@torch.no_grad()
def raw_step_weights(
    model: MTPModel,
    batch: dict[str, Any],
    *,
    weight_fn: WeightFn,
    chunk_tokens: int,
    autocast: AbstractContextManager | None = None,
) -> Tensor:
    """The WeightFn's raw weights Float[B,T,H] for one micro-batch, computed before any backward of the step
    (a no-grad forward of every head when the WeightFn reads the CE, of its own modules when it reads outputs)."""
    targets, valid = batch_targets(batch, model.n_heads)
    ce, outputs = None, {}
    if weight_fn.needs_ce or weight_fn.needs_values:
        with autocast or nullcontext():
            z, ctx = model.trunk_forward(batch["input_ids"], batch["attention_mask"], batch.get("segment_ids"))
            if weight_fn.needs_ce:
                ce = heads_ce(model, z, ctx, targets, valid, chunk_tokens=chunk_tokens)
        if weight_fn.needs_values:
            outputs = weight_fn.forward(model, z, ctx)
    return weight_fn.weights(batch, valid, ce, outputs).detach()


@torch.no_grad()
def check_head1_alignment(model: MTPModel, batch: dict[str, Any]) -> None:
    """Fail loudly unless head 1 reproduces the trunk's own shifted causal-LM labels (and, when head 1 is
    the trunk's last block, the trunk's own logits). Head 1's offset is 1 whatever the model's head_offsets."""
    if model.head_offsets[0] != 1:
        raise RuntimeError(f"head 1 must predict t+1, but the model's head_offsets are {list(model.head_offsets)}")
    targets, valid = batch_targets(batch, model.n_heads, offsets=model.head_offsets)
    ids, loss_mask, attn = batch["input_ids"], batch["loss_mask"].bool(), batch["attention_mask"].bool()
    hf_labels = torch.where(loss_mask, ids, -100)[:, 1:]  # HF shifts labels left by one inside its loss
    ours = torch.where(attn[:, :-1], targets[:, :-1, 0], -100)
    theirs = torch.where(attn[:, :-1], hf_labels, -100)
    if not torch.equal(ours, theirs):
        b, t = (ours != theirs).nonzero()[0].tolist()
        raise RuntimeError(
            f"head-1 targets disagree with the trunk's shifted labels at batch row {b}, position {t}: "
            f"{ours[b, t].item()} vs {theirs[b, t].item()}"
        )
    if model.head1_is_trunk_layer:
        ids1, attn1 = ids[:1], attn[:1]
        z, ctx = model.trunk_forward(ids1, attn1)
        ours_logits = model.head_hidden(1, z, ctx) @ model.unembed.T
        hf_logits = model.trunk(input_ids=ids1, attention_mask=attn1.long()).logits
        keep = attn1[0]
        err = (ours_logits[0][keep] - hf_logits[0][keep]).abs().max().item()
        if err > 1e-3:
            raise RuntimeError(f"head-1 logits differ from the trunk's own logits by {err:.3g}")
