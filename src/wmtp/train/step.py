"""One micro-batch of weighted MTP: trunk forward, the weights, then the heads' fused CE and backward.

Two paths (`one_pass` chooses):

one pass   weights local to a position (WeightFn.has_local_weights, e.g. rho1's softmax_heads), no needs_values, and
           no clipping of `mean`-normalised weights. All H head blocks run forward on z' = z.detach() with their
           graph (held at once: H head blocks' activations, the extra memory of this path), then over chunks of
           positions every head's logits are computed once, the CE, the weights (`local_weights`) and the weighted
           gradients ∂h_k and ∂W (one shared fp32 buffer); one backward through the head blocks, one z.backward(∂z').
           `mean`'s factor n_valid/Σw is one scalar and the gradient is linear in it: the gradient buffers are scaled
           at the end, or, over several micro-batches or ranks (`defer_mean`), the trainer scales every .grad at the
           end of the optimizer step (StepResult.weight_total). No no-grad head or trunk pass. Log-weights up to one
           constant per micro-batch (WeightFn.local_weights_are_logs: rho1's softmax_batch) are exponentiated against
           the running max; when it grows, the earlier chunks' weights, coefficients, ∂h rows and ∂W are rescaled
           (online max-rescaling), and the micro-batch is normalised to its own valid count under `mean`.
two passes a weight that needs the whole step: topk (a rank over the batch), clip_min/clip_max after
           `mean`, controls (a permutation of the batch), the values of attached modules (the critic), hybrids. A
           no-grad CE pass of every head gives the weights (with several micro-batches or ranks the trainer runs
           `raw_step_weights` first: a no-grad trunk forward too), then Meta's sequential per-head backward: head k
           runs forward on z', its loss Σ coef·ce is back-propagated at once (freeing that head's activations),
           accumulating ∂L/∂z'; finally z.backward(∂L/∂z') runs the trunk backward once. Peak memory is the trunk's
           activations plus one head's.

Host syncs: one for the selection of rows per micro-batch, one for the loss; none inside the head or chunk loops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.distributed.tensor import DTensor

from wmtp.config import WeightingConfig
from wmtp.model.loss import (
    Unembedding,
    ce_and_grad_norm,
    chunked_weighted_ce,
    linear_ce,
    matmul_dtype,
    mtp_targets,
)
from wmtp.model.mtp import MTPModel, TrunkContext
from wmtp.train.distributed import Distributed
from wmtp.weighting.base import WeightFn, normalize_weights


@dataclass
class StepResult:
    """What one micro-batch contributed. loss: the weighted loss (already divided by the step's n_valid).
    ce: Float[B,T,H] unweighted CE (0 where invalid); weights: normalised Float[B,T,H]; valid: Bool[B,T,H].
    weight_total: Σ_valid raw weight when the `mean` factor was left to the caller (`defer_mean`): loss, weights and
    the gradient are then unscaled; multiply all three by n_valid_step / (Σ weight_total over the step) (1 if 0)."""

    loss: float
    ce: Tensor
    weights: Tensor
    valid: Tensor
    aux: dict[str, float] = field(default_factory=dict)  # the weighting's aux-loss metrics
    weight_total: float | None = None


def batch_targets(
    batch: dict[str, Any], n_heads: int, *, offsets: Sequence[int] | None = None
) -> tuple[Tensor, Tensor]:
    """`mtp_targets` of a collated batch: (targets Long[B,T,H], valid Bool[B,T,H]); offsets: the model's
    head_offsets (None = 1..n_heads); packed rows (segment_ids) keep targets inside their record."""
    return mtp_targets(batch["input_ids"], batch["loss_mask"], batch["attention_mask"], n_heads, offsets,
                       segment_ids=batch.get("segment_ids"))


def one_pass(weight_fn: WeightFn, wcfg: WeightingConfig) -> bool:
    """Whether forward_backward weighs and back-propagates in one pass (module docstring): local weights, no
    needs_values, and no clipping after `mean` (clipping after per_position is local too)."""
    clipped = wcfg.clip_min is not None or wcfg.clip_max is not None
    return (weight_fn.has_local_weights() and not weight_fn.needs_values
            and (wcfg.normalize == "per_position" or not clipped))  # fmt: skip


def head_rows(valid: Tensor) -> list[Tensor | None]:
    """Per head k, the flat (b·T + t) indices Long[N_k] of its valid entries (None: none), with one host sync."""
    counts = valid.sum(dim=(0, 1)).tolist()
    return [torch.nonzero_static(valid[..., k].flatten(), size=n).squeeze(1) if n else None
            for k, n in enumerate(counts)]  # fmt: skip


def heads_ce_stats(
    model: MTPModel, z: Tensor, ctx: TrunkContext, targets: Tensor, valid: Tensor, *, chunk_tokens: int,
    grad_norm: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """(ce, ‖∂ce/∂logits‖₂ when `grad_norm` else None), each Float[B,T,H] of every head on trunk output z (0 where
    invalid), one head at a time."""
    H = model.n_heads
    ce = torch.zeros(valid.shape, dtype=torch.float32, device=z.device)
    norm = torch.zeros_like(ce) if grad_norm else None
    for k, rows in enumerate(head_rows(valid), start=1):
        if rows is None:
            if sharded():
                model.head_hidden(k, z, ctx)  # FSDP: every rank runs every head block (its all-gather is collective)
            continue
        h = model.head_hidden(k, z, ctx).flatten(0, 1)[rows]  # [N,D]: only tokens with a target
        y = targets[..., k - 1].flatten()[rows]
        if grad_norm:
            ce.view(-1, H)[rows, k - 1], norm.view(-1, H)[rows, k - 1] = ce_and_grad_norm(
                h, model.unembed, y, chunk_tokens=chunk_tokens)  # fmt: skip
        else:
            ce.view(-1, H)[rows, k - 1] = linear_ce(h, model.unembed, y, chunk_tokens=chunk_tokens)
    return ce, norm


def heads_ce(
    model: MTPModel, z: Tensor, ctx: TrunkContext, targets: Tensor, valid: Tensor, *, chunk_tokens: int
) -> Tensor:
    """Per-(t,k) CE Float[B,T,H] of every head on trunk output z (0 where invalid), one head at a time."""
    return heads_ce_stats(model, z, ctx, targets, valid, chunk_tokens=chunk_tokens)[0]


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
    defer_mean: bool = False,
) -> StepResult:
    """Accumulate ∂/∂θ of Σ_valid w·ce·λ_k / n_valid_step into .grad for this micro-batch.

    n_valid_step: valid (t,k) entries over all micro-batches of the optimizer step, so that gradient
    accumulation gives the same loss as one large batch. Two passes (module docstring) with several micro-batches:
    the caller passes each one's `raw_weights` (from `raw_step_weights`) and their valid sum over the step,
    `weight_total_step`, so that `mean` normalisation is over the whole step; otherwise the weights are computed
    here, sharing the trunk forward. One pass (`one_pass`, raw_weights None) with several micro-batches:
    defer_mean=True leaves `mean`'s factor to the caller (StepResult.weight_total).

    The weighting's `forward` (its attached modules) runs on the same detached trunk output: its detached outputs
    feed the weights, and its `aux_loss` (given n_tokens_step, the step's loss-carrying tokens) joins the backward.
    """
    amp = autocast or nullcontext()
    targets, valid = batch_targets(batch, model.n_heads, offsets=model.head_offsets)
    with amp:
        z, ctx = model.trunk_forward(batch["input_ids"], batch["attention_mask"], batch.get("segment_ids"))
    z_detached = z.detach().requires_grad_()
    outputs = weight_fn.forward(model, z_detached, ctx)  # graph into the weighting's modules and z'
    unembed = model.unembed
    # One [V,D] buffer collects every head's unembedding gradient: autograd would hold a fresh one per head.
    unembed_grad = torch.zeros(unembed.shape, dtype=torch.float32, device=unembed.device) if unembed.requires_grad else None
    args = {"weight_fn": weight_fn, "wcfg": wcfg, "n_valid_step": n_valid_step, "chunk_tokens": chunk_tokens,
            "amp": amp, "unembed_grad": unembed_grad}  # fmt: skip
    if raw_weights is None and one_pass(weight_fn, wcfg):
        loss, ce, weights, any_head, weight_total, negative = _one_pass(model, batch, z_detached, ctx, targets, valid,
                                                                        defer_mean=defer_mean, **args)  # fmt: skip
    elif defer_mean:
        raise ValueError("defer_mean is for the one pass only (wmtp.train.step.one_pass)")
    else:
        loss, ce, weights, any_head = _two_passes(model, batch, z_detached, ctx, targets, valid, outputs,
                                                  raw_weights=raw_weights, weight_total_step=weight_total_step, **args)
        weight_total, negative = None, None
    aux = weight_fn.aux_loss(batch, outputs, n_tokens=n_tokens_step)
    if aux is not None:
        if weight_total is not None:
            raise RuntimeError(f"{type(weight_fn).__name__} has an aux loss: its weights cannot be local "
                               "(has_local_weights must be False), the deferred `mean` factor would scale it")
        aux_loss, aux_metrics = aux
        aux_loss.backward()
    if z_detached.grad is not None and z.requires_grad:  # not with the trunk frozen (train.heads_warmup_steps)
        z.backward(z_detached.grad)
    if (any_head or sharded()) and unembed_grad is not None:  # frozen under LoRA; every rank joins the grad sum
        if unembed.grad is None:
            unembed.grad = unembed_grad.to(unembed.dtype)
        else:
            unembed.grad.add_(unembed_grad)
    zero = loss.new_zeros((), dtype=torch.float32)
    loss_value, total_value, bad = torch.stack([loss.detach().float(), zero if weight_total is None else weight_total,
                                                zero if negative is None else negative.float()]).tolist()  # one sync
    if bad:
        raise ValueError(f"weights must be >= 0: {type(weight_fn).__name__}.local_weights gave a negative weight")
    return StepResult(loss=loss_value, ce=ce, weights=weights, valid=valid, aux=aux_metrics if aux is not None else {},
                      weight_total=total_value if weight_total is not None else None)


def _one_pass(
    model: MTPModel, batch: dict[str, Any], z: Tensor, ctx: TrunkContext, targets: Tensor, valid: Tensor, *,
    weight_fn: WeightFn, wcfg: WeightingConfig, n_valid_step: int, chunk_tokens: int, amp: AbstractContextManager,
    unembed_grad: Tensor | None, defer_mean: bool,
) -> tuple[Tensor, Tensor, Tensor, bool, Tensor | None, Tensor]:
    """The one pass (module docstring) on z' (z, detached, requiring grad): back-propagates into the head blocks
    and z.grad, adds ∂W into unembed_grad. Returns (loss Tensor[], ce Float[B,T,H], normalised weights Float[B,T,H],
    whether any entry is valid, Σ_valid raw weight when defer_mean else None, Bool[]: a raw weight was < 0)."""
    B, T, H = valid.shape
    positions = valid.any(dim=-1).flatten().nonzero().squeeze(1)  # [N] positions with a target (a host sync)
    N = positions.numel()
    with amp:
        hidden = torch.stack([model.head_hidden(k, z, ctx).flatten(0, 1)[positions] for k in range(1, H + 1)], dim=1)
        unembedding = Unembedding(model.unembed, H * max(min(chunk_tokens // H, N), 1), dtype=matmul_dtype(hidden),
                                  grad=unembed_grad)  # fmt: skip
    rows_valid, rows_targets = valid.flatten(0, 1)[positions], targets.flatten(0, 1)[positions]  # [N,H]
    extras = {name: x.flatten(0, 1)[positions] for name, x in weight_fn.local_extras(batch, valid).items()}
    lam = None if wcfg.head_coefs is None else torch.tensor(wcfg.head_coefs, dtype=torch.float32, device=z.device)
    weights = torch.zeros(N, H, dtype=torch.float32, device=z.device)
    raw_total = torch.zeros((), dtype=torch.float32, device=z.device)
    negative = torch.zeros((), dtype=torch.bool, device=z.device)
    logs = weight_fn.local_weights_are_logs()
    top = torch.full((), float("-inf"), dtype=torch.float32, device=z.device)  # logs: the running max so far

    def weigh(start: int, ce: Tensor, has_target: Tensor, norm: Tensor | None) -> Tensor | tuple[Tensor, Tensor]:
        n, s = len(ce) // H, start // H  # rows are (position, head): the chunk holds positions s..s+n
        v = has_target.view(n, H)
        seen = {} if norm is None else {"logit_grad_norm": norm.view(n, H)}
        raw = weight_fn.local_weights(ce.view(n, H), v, {k: x[s : s + n] for k, x in extras.items()}, seen)
        rescale = None
        if logs:  # raw = log-weights up to one constant (−inf: weight 0)
            raw = torch.where(v, raw.detach().float(), float("-inf"))
            if wcfg.normalize == "per_position":  # the constant cancels within a position: each its own max
                shift = raw.amax(dim=-1, keepdim=True)
            else:  # `mean`: exp against the running max; earlier chunks are rescaled when it grows
                new_top = torch.maximum(top, raw.max())
                rescale = torch.where(torch.isfinite(top), torch.exp(top - new_top), 1.0)
                weights[:s].mul_(rescale)
                raw_total.mul_(rescale)
                top.copy_(new_top)
                shift = new_top
            raw = torch.where(v & torch.isfinite(raw), torch.exp(raw - torch.where(torch.isfinite(shift), shift, 0.0)),
                              0.0)
        raw = torch.where(v, raw.detach().float(), 0.0)
        negative.logical_or_((raw < 0).any())  # checked once, after the loop: no host sync per chunk
        if wcfg.normalize == "per_position":
            w = normalize_weights(raw, v, mode="per_position", clip_min=wcfg.clip_min, clip_max=wcfg.clip_max,
                                  check=False)  # fmt: skip
        else:  # mean: the factor n_valid/Σw is applied after the loop
            w = raw
            raw_total.add_(raw.sum())
        weights[s : s + n] = w
        coef = ((w if lam is None else w * lam) / max(n_valid_step, 1)).flatten()
        return coef if rescale is None else (coef, rescale)

    ce, coef, grad_hidden = chunked_weighted_ce(
        hidden.detach().flatten(0, 1), rows_targets.flatten(), weigh, unembedding,
        chunk_rows=H * max(chunk_tokens // H, 1), grad_norm=weight_fn.needs_grad_norm,
    )  # fmt: skip
    loss = (ce * coef).sum()
    n_valid_mb = rows_valid.sum()
    if wcfg.normalize == "mean" and (logs or not defer_mean):  # logs: their constant is this micro-batch's own
        factor = torch.where(raw_total > 0, n_valid_mb / raw_total, 1.0)  # this micro-batch's n_valid / Σw
        for t in (grad_hidden, weights) if unembed_grad is None else (grad_hidden, weights, unembed_grad):
            t.mul_(factor.to(t.dtype))
        loss = loss * factor
    torch.autograd.backward(hidden, grad_hidden.view_as(hidden))  # every head block's backward; ∂L/∂z' accumulates
    full_ce = torch.zeros(B * T, H, dtype=torch.float32, device=z.device)
    full_w = torch.zeros_like(full_ce)
    full_ce[positions], full_w[positions] = ce.view(N, H), weights
    deferred = None
    if wcfg.normalize == "mean" and defer_mean:  # Σ_valid w of this micro-batch (log-weights: already normalised)
        deferred = torch.where(raw_total > 0, n_valid_mb.float(), 0.0) if logs else raw_total
    return loss, full_ce.view(B, T, H), full_w.view(B, T, H), N > 0, deferred, negative


def _raw_weights(
    model: MTPModel, batch: dict[str, Any], z: Tensor, ctx: TrunkContext, targets: Tensor, valid: Tensor,
    outputs: dict[str, Tensor], *, weight_fn: WeightFn, chunk_tokens: int, amp: AbstractContextManager,
) -> Tensor:
    """weight_fn.weights of a micro-batch, after a no-grad CE pass of every head when it reads the CE or the
    logit-gradient norm (computed in the same pass: outputs["logit_grad_norm"])."""
    ce, norm = None, None
    if weight_fn.needs_ce or weight_fn.needs_grad_norm:
        with torch.no_grad(), amp:
            ce, norm = heads_ce_stats(model, z.detach(), ctx, targets, valid, chunk_tokens=chunk_tokens,
                                      grad_norm=weight_fn.needs_grad_norm)  # fmt: skip
    seen = {k: v.detach() for k, v in outputs.items()} if weight_fn.needs_values else {}
    if norm is not None:
        seen["logit_grad_norm"] = norm
    return weight_fn.weights(batch, valid, ce if weight_fn.needs_ce else None, seen)


def _two_passes(
    model: MTPModel, batch: dict[str, Any], z: Tensor, ctx: TrunkContext, targets: Tensor, valid: Tensor,
    outputs: dict[str, Tensor], *, weight_fn: WeightFn, wcfg: WeightingConfig, n_valid_step: int, chunk_tokens: int,
    amp: AbstractContextManager, unembed_grad: Tensor | None, raw_weights: Tensor | None,
    weight_total_step: float | None,
) -> tuple[Tensor, Tensor, Tensor, bool]:
    """The weights first, then Meta's sequential per-head backward on z' (module docstring). Returns (loss Tensor[],
    ce Float[B,T,H], normalised weights Float[B,T,H], whether any head had a target)."""
    if raw_weights is None:
        raw_weights = _raw_weights(model, batch, z, ctx, targets, valid, outputs, weight_fn=weight_fn,
                                   chunk_tokens=chunk_tokens, amp=amp)  # fmt: skip
    totals = None if weight_total_step is None else (weight_total_step, n_valid_step)
    weights = normalize_weights(
        raw_weights, valid, mode=wcfg.normalize, clip_min=wcfg.clip_min, clip_max=wcfg.clip_max, totals=totals
    )
    coef = weights / max(n_valid_step, 1)  # detached: weights never carry a graph
    if wcfg.head_coefs is not None:
        coef = coef * torch.tensor(wcfg.head_coefs, dtype=coef.dtype, device=coef.device)

    H = model.n_heads
    ce = torch.zeros(valid.shape, dtype=torch.float32, device=z.device)
    loss = torch.zeros((), dtype=torch.float32, device=z.device)
    unembedding = None
    selections = head_rows(valid)
    for k, rows in enumerate(selections, start=1):
        if rows is None:
            if sharded():  # no target on this rank: still run head k's forward/backward for FSDP's collectives
                with amp:
                    (model.head_hidden(k, z, ctx).sum() * 0.0).backward()
            continue
        with amp:
            h = model.head_hidden(k, z, ctx).flatten(0, 1)[rows]  # [N,D]
            if unembedding is None:  # one reused logits buffer for every head
                longest = max(len(r) for r in selections if r is not None)
                unembedding = Unembedding(model.unembed, max(min(chunk_tokens, longest), 1),
                                          dtype=matmul_dtype(h), grad=unembed_grad)  # fmt: skip
        c = coef[..., k - 1].flatten()[rows]
        ce_k, _, grad_h = chunked_weighted_ce(h.detach(), targets[..., k - 1].flatten()[rows],
                                              lambda s, x, _v, _n, c=c: c[s : s + len(x)], unembedding,
                                              chunk_rows=chunk_tokens)  # fmt: skip
        h.backward(grad_h)  # frees head k's graph now; ∂L/∂z' accumulates in z.grad
        ce.view(-1, H)[rows, k - 1] = ce_k
        loss += (ce_k * c).sum()
    return loss, ce, weights, any(r is not None for r in selections)


def step_gradients(
    model: MTPModel,
    micro: Sequence[dict[str, Any]],
    *,
    weight_fn: WeightFn,
    wcfg: WeightingConfig,
    n_valid_step: int,
    n_tokens_step: int,
    chunk_tokens: int,
    dist: Distributed,
    autocast: Callable[[], AbstractContextManager] | None = None,
) -> tuple[list[StepResult], bool]:
    """Accumulate the gradient of one optimizer step over its micro-batches into .grad (before any sync of ranks).

    n_valid_step / n_tokens_step: the step's valid (t,k) entries and loss-carrying tokens over every micro-batch and
    rank. With several micro-batches or ranks `mean` normalisation spans the step: in two passes every raw weight is
    computed first (`raw_step_weights`, Σw summed over ranks); in one pass nothing runs twice and the returned flag
    `defer_mean` is True: the caller then scales every .grad by `deferred_mean_factor` once the results'
    weight_total are summed (over ranks too). Returns (one StepResult per micro-batch, defer_mean).
    """
    amp = autocast or nullcontext
    several, single_pass = len(micro) > 1 or dist.sharded, one_pass(weight_fn, wcfg)
    defer_mean = several and single_pass and wcfg.normalize == "mean"
    raws: list[Tensor | None] = [None] * len(micro)
    weight_total = None
    if several and not single_pass:
        raws = [raw_step_weights(model, b, weight_fn=weight_fn, chunk_tokens=chunk_tokens, autocast=amp())
                for b in micro]  # fmt: skip
        offsets = model.head_offsets
        weight_total = dist.sum(sum(torch.where(batch_targets(b, model.n_heads, offsets=offsets)[1], r, 0.0).sum().item()
                                    for b, r in zip(micro, raws)))[0]  # fmt: skip
    results = [
        forward_backward(model, batch, weight_fn=weight_fn, wcfg=wcfg, n_valid_step=n_valid_step,
                         chunk_tokens=chunk_tokens, autocast=amp(), raw_weights=raw, weight_total_step=weight_total,
                         n_tokens_step=n_tokens_step, defer_mean=defer_mean)  # fmt: skip
        for batch, raw in zip(micro, raws)
    ]
    return results, defer_mean


def deferred_mean_factor(model: MTPModel, n_valid_step: int, weight_total_step: float) -> float:
    """The one pass's `mean` factor n_valid/Σw over the whole step, applied to every .grad of `model` (the gradient is
    linear in it); returns it (1 when Σw = 0) for the caller's loss and weight metrics."""
    factor = n_valid_step / weight_total_step if weight_total_step > 0 else 1.0
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    for kind in ([g for g in grads if isinstance(g, DTensor)], [g for g in grads if not isinstance(g, DTensor)]):
        if kind:  # FSDP2's sharded DTensor gradients and replicated plain ones: foreach ops refuse a mix
            torch._foreach_mul_(kind, factor)
    return factor


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
    (a no-grad forward of every head when the WeightFn reads the CE or the logit-gradient norm, of its own modules
    when it reads outputs). Only the two-pass path needs it (module docstring)."""
    targets, valid = batch_targets(batch, model.n_heads, offsets=model.head_offsets)
    if not (weight_fn.needs_ce or weight_fn.needs_values or weight_fn.needs_grad_norm):
        return weight_fn.weights(batch, valid, None, {}).detach()
    amp = autocast or nullcontext()
    with amp:
        z, ctx = model.trunk_forward(batch["input_ids"], batch["attention_mask"], batch.get("segment_ids"))
    outputs = weight_fn.forward(model, z, ctx) if weight_fn.needs_values else {}
    return _raw_weights(model, batch, z, ctx, targets, valid, outputs, weight_fn=weight_fn, chunk_tokens=chunk_tokens,
                        amp=amp).detach()  # fmt: skip


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
