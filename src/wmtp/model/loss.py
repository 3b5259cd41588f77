"""Aligned MTP targets, per-head cross-entropy without all heads' logits, and the weighted reduction.

Legend: B batch, T sequence, H heads, D hidden, V vocabulary, N selected tokens.
Head k ∈ {1..H} at position t predicts token j = t + o_k, o = the model's head offsets (default o_k = k,
DESIGN §4; wmtp.model.offsets):
    valid[b,t,k] = (t+o_k < T) and loss_mask[b,t+o_k] and attention_mask[b,t]
Loss = Σ_valid w·ce·λ_k / Σ_valid 1 (DESIGN §6); w comes detached from a WeightFn.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from wmtp.model.offsets import check_offsets

IGNORE_INDEX = -100


def mtp_targets(
    input_ids: Tensor,
    loss_mask: Tensor,
    attention_mask: Tensor,
    n_heads: int,
    offsets: Sequence[int] | None = None,
    *,
    segment_ids: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Targets of every head at every position.

    input_ids, loss_mask, attention_mask: [B,T] (masks bool or 0/1). offsets o: head k predicts j = t + o_k
    (n_heads positive, strictly increasing ints; None = 1..n_heads).
    Returns targets Long[B,T,H] (input_ids[b,t+o_k], or -100 where invalid) and valid Bool[B,T,H],
    with valid[b,t,k-1] = (t+o_k < T) & loss_mask[b,t+o_k] & attention_mask[b,t].
    segment_ids (optional Long[B,T], packed rows): additionally segment_ids[b,t] == segment_ids[b,t+o_k], so no
    target crosses a record boundary.
    """
    if n_heads < 1:
        raise ValueError(f"n_heads must be >= 1, got {n_heads}")
    offsets = check_offsets(offsets, n_heads)
    if not (input_ids.shape == loss_mask.shape == attention_mask.shape) or input_ids.dim() != 2:
        raise ValueError(
            f"input_ids, loss_mask and attention_mask must share one [B,T] shape, got "
            f"{tuple(input_ids.shape)}, {tuple(loss_mask.shape)}, {tuple(attention_mask.shape)}"
        )
    B, T = input_ids.shape
    loss_mask, attention_mask = loss_mask.bool(), attention_mask.bool()
    valid = torch.zeros(B, T, n_heads, dtype=torch.bool, device=input_ids.device)
    targets = torch.full((B, T, n_heads), IGNORE_INDEX, dtype=torch.long, device=input_ids.device)
    for k, o in enumerate(offsets, start=1):
        if o >= T:
            break  # offsets increase: no later head has a target either
        v = loss_mask[:, o:] & attention_mask[:, : T - o]  # [B, T-o]: target j = t+o
        if segment_ids is not None:
            v = v & (segment_ids[:, o:] == segment_ids[:, : T - o])
        valid[:, : T - o, k - 1] = v
        targets[:, : T - o, k - 1] = torch.where(v, input_ids[:, o:].long(), IGNORE_INDEX)
    return targets, valid


def linear_ce(hidden: Tensor, unembed: Tensor, targets: Tensor, *, chunk_tokens: int) -> Tensor:
    """Per-token CE of logits = hidden @ unembedᵀ, computed in chunks of tokens.

    hidden: [N,D], unembed: [V,D], targets: Long[N] (-100 ignored → ce 0). Returns ce: Float[N]
    (differentiable; backward recomputes each chunk's logits, so [N,V] is never held).
    """
    options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=chunk_tokens, chunking_method=None)
    ce = F.linear_cross_entropy(
        hidden, unembed, targets, reduction="none", ignore_index=IGNORE_INDEX, options=options
    )
    return ce.float()


class _WeightedLinearCE(torch.autograd.Function):
    """Σ_i c_i · CE(hidden_i @ Wᵀ, y_i) with its gradient computed chunk by chunk during the forward.

    The per-token coefficients c are known before the forward (detached weights), so the gradient
    ∂/∂logits = c_i·(softmax − onehot) can be folded into hidden/unembed gradients chunk by chunk:
    no [N,V] tensor survives a chunk and no logits are recomputed in the backward.
    """

    @staticmethod
    def forward(ctx, hidden, unembed, targets, coef, chunk_tokens, unembed_grad):
        w = unembed.to(hidden.dtype)
        grad_hidden = torch.empty_like(hidden)
        external = unembed_grad is not None
        grad_unembed = unembed_grad if external else torch.zeros(unembed.shape, dtype=torch.float32, device=unembed.device)
        ce = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        for s in range(0, hidden.shape[0], chunk_tokens):
            h, y, c = hidden[s : s + chunk_tokens], targets[s : s + chunk_tokens], coef[s : s + chunk_tokens]
            logits = (h @ w.T).float()  # [n,V]: the only chunk-sized buffer; everything below is in place
            target_logit = logits.gather(1, y[:, None]).squeeze(1)
            top = logits.amax(dim=-1, keepdim=True)
            probs = logits.sub_(top).exp_()  # exp(logits − max); torch.logsumexp would allocate [n,V] copies
            total = probs.sum(dim=-1, keepdim=True)
            ce[s : s + chunk_tokens] = (top + total.log()).squeeze(1) - target_logit
            grad_logits = probs.div_(total)  # softmax
            grad_logits[torch.arange(len(y), device=y.device), y] -= 1.0
            grad_logits.mul_(c[:, None].float())
            grad_hidden[s : s + chunk_tokens] = (grad_logits.to(hidden.dtype) @ w).to(hidden.dtype)
            grad_unembed.addmm_(grad_logits.T, h.float())
        ctx.external = external
        ctx.save_for_backward(grad_hidden, None if external else grad_unembed.to(unembed.dtype))
        return (ce * coef.float()).sum(), ce

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_ce: Tensor):
        grad_hidden, grad_unembed = ctx.saved_tensors
        if ctx.external:
            if grad_loss.item() != 1.0:
                raise RuntimeError("a loss whose unembedding gradient went to `unembed_grad` must be back-propagated with gradient 1")
            return grad_hidden, None, None, None, None, None
        return grad_hidden * grad_loss, grad_unembed * grad_loss, None, None, None, None


def weighted_linear_ce(
    hidden: Tensor,
    unembed: Tensor,
    targets: Tensor,
    coef: Tensor,
    *,
    chunk_tokens: int,
    unembed_grad: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Fused unembedding + weighted CE for tokens whose coefficients are known in advance.

    hidden: [N,D] (every row a valid target), unembed: [V,D], targets: Long[N], coef: Float[N] (detached).
    Returns (loss = Σ_i coef_i·ce_i, a differentiable scalar; ce: Float[N], detached).
    unembed_grad: optional Float32[V,D] buffer; when given, ∂loss/∂unembed is added into it during the
    forward instead of flowing through autograd (the loss must then be back-propagated with gradient 1),
    so that all heads share one [V,D] gradient buffer.
    """
    if torch.any(targets < 0):
        raise ValueError("weighted_linear_ce expects only valid targets (select rows before calling)")
    loss, ce = _WeightedLinearCE.apply(hidden, unembed, targets, coef.detach(), chunk_tokens, unembed_grad)
    return loss, ce.detach()


def reduce_weighted(ce: Tensor, weights: Tensor, valid: Tensor, head_coefs: Tensor | None = None) -> Tensor:
    """Loss = Σ_valid w·ce·λ_k / Σ_valid 1.

    ce, weights: Float[B,T,H]; valid: Bool[B,T,H]; head_coefs λ: Float[H] or None (= 1).
    weights are detached here, whatever the caller passed.
    """
    coef = torch.where(valid, weights.detach(), 0.0)  # not w·valid: an inf/nan at an invalid entry must not leak
    if head_coefs is not None:
        coef = coef * head_coefs.to(coef)
    n_valid = valid.sum().clamp(min=1)
    return (torch.where(valid, ce, 0.0) * coef).sum() / n_valid
