"""Aligned MTP targets, per-head cross-entropy without all heads' logits, and the weighted reduction.

Legend: B batch, T sequence, H heads, D hidden, V vocabulary, N selected tokens.
Head k ∈ {1..H} at position t predicts token j = t + o_k, o = the model's head offsets (default o_k = k,
DESIGN §4; wmtp.model.offsets):
    valid[b,t,k] = (t+o_k < T) and loss_mask[b,t+o_k] and attention_mask[b,t]
Loss = Σ_valid w·ce·λ_k / Σ_valid 1 (DESIGN §6); w comes detached from a WeightFn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


class Unembedding:
    """The shared unembedding applied to one chunk of rows at a time, with buffers reused across chunks.

    logits(h) = h @ Wᵀ into one fp32 [rows,V] buffer (matmul with `out=`: no fresh [n,V] per chunk);
    backward(g, h) = g @ W (∂hidden) and adds gᵀ @ h (∂W) into `grad` (Float32[V,D]).
    The matmuls run in `dtype`: the autocast dtype when autocast is on (bf16 ∂W included, accumulated into the
    fp32 `grad` — an in-place addmm_ would skip autocast and run in fp32), else the hidden dtype.
    """

    def __init__(self, unembed: Tensor, rows: int, *, dtype: torch.dtype, grad: Tensor | None):
        self.dtype, self.grad = dtype, grad
        self.w = unembed.detach().to(dtype)  # [V,D], cast once per call, not per chunk
        V, D = unembed.shape
        self.logits_buf = torch.empty(rows, V, dtype=torch.float32, device=unembed.device)
        low = dtype != torch.float32
        self.low_buf = torch.empty(rows, V, dtype=dtype, device=unembed.device) if low else None
        self.grad_w_buf = torch.empty(V, D, dtype=dtype, device=unembed.device) if low and grad is not None else None

    def logits(self, h: Tensor) -> Tensor:
        """Float32[n,V] (a view of the reused buffer, valid until the next call) for h: [n,D]."""
        n, h = h.shape[0], h.to(self.dtype)
        if self.low_buf is None:
            return torch.mm(h, self.w.T, out=self.logits_buf[:n])
        return self.logits_buf[:n].copy_(torch.mm(h, self.w.T, out=self.low_buf[:n]))

    def backward(self, grad_logits: Tensor, h: Tensor) -> Tensor:
        """∂hidden [n,D] (in h's dtype) of a chunk whose ∂logits is grad_logits: Float32[n,V]; ∂W joins `grad`."""
        n, hc = h.shape[0], h.to(self.dtype)
        g = grad_logits if self.low_buf is None else self.low_buf[:n].copy_(grad_logits)
        if self.grad is not None:
            if self.grad_w_buf is None:
                self.grad.addmm_(g.T, hc)
            else:
                self.grad.add_(torch.mm(g.T, hc, out=self.grad_w_buf))
        return torch.mm(g, self.w).to(h.dtype)


def matmul_dtype(hidden: Tensor) -> torch.dtype:
    """The dtype the unembedding matmuls run in: autocast's when it is on for hidden's device, else hidden's."""
    device = hidden.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype


def exp_shifted_(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """In place: logits Float32[n,V] → e = exp(logits − max) (torch.logsumexp would allocate [n,V] copies).
    targets: Long[n] (each a real class). Returns (ce Float[n] = logsumexp − logit_y, Σ_v e Float[n,1])."""
    target_logit = logits.gather(1, targets[:, None]).squeeze(1)
    top = logits.amax(dim=-1, keepdim=True)
    e = logits.sub_(top).exp_()
    total = e.sum(dim=-1, keepdim=True)
    return (top + total.log()).squeeze(1) - target_logit, total


def grad_norm_from_exp(e: Tensor, total: Tensor, targets: Tensor) -> Tensor:
    """‖softmax − onehot(y)‖₂ = ‖∂ce/∂logits‖₂ per row, Float[n], from e = exp(logits − max) [n,V] and Σ_v e [n,1]:
    sqrt((1 − p_y)² + Σ_{v≠y} p_v²) with both sums taken over the other classes (e_y is zeroed for the two reductions
    and restored), so a near-certain right prediction keeps its small norm instead of cancelling to 0."""
    rows = torch.arange(len(targets), device=targets.device)
    e_y = e[rows, targets].clone()
    e[rows, targets] = 0.0
    rest, rest_sq = e.sum(dim=-1), torch.linalg.vector_norm(e, dim=-1) ** 2  # reductions: no [n,V] temporary
    e[rows, targets] = e_y
    total = total.squeeze(1)
    return ((rest / total) ** 2 + rest_sq / total**2).sqrt()


def logit_grad_(e: Tensor, total: Tensor, targets: Tensor, coef: Tensor) -> Tensor:
    """In place: e = exp(logits − max) [n,V] → coef·(softmax − onehot(y)) = ∂(Σ_i coef_i·ce_i)/∂logits.
    total: Σ_v e [n,1]; coef: Float[n]. The softmax division and the scale are one op."""
    grad = e.mul_(coef[:, None].float() / total)
    grad[torch.arange(len(targets), device=targets.device), targets] -= coef.float()
    return grad


Weigh = Callable[[int, Tensor, Tensor, "Tensor | None"], "Tensor | tuple[Tensor, Tensor]"]
"""weigh(start, ce Float[n], has_target Bool[n], grad_norm Float[n] | None) → coef Float[n] of rows start..start+n,
or (coef, rescale Float[]): every earlier row's coefficient, ∂hidden and ∂W contribution is multiplied by rescale
first (online max-rescaling of coefficients exp(s − running max))."""


def chunked_weighted_ce(
    hidden: Tensor,
    targets: Tensor,
    weigh: Weigh,
    unembedding: Unembedding,
    *,
    chunk_rows: int,
    grad_norm: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row CE of hidden @ Wᵀ, coefficients from that CE, and ∂(Σ_i c_i·ce_i)/∂hidden, one chunk of rows at a time.

    hidden: [N,D] (no graph needed), targets: Long[N] (−100: no target → ce 0, c 0). For each chunk of `chunk_rows`
    rows the logits are computed once into the reused buffer, then ce, c = weigh(start, ce, has_target, ‖∂ce/∂logits‖
    when `grad_norm`) and the gradient c·(softmax − onehot): ∂hidden is returned, ∂W added into unembedding.grad.
    Returns (ce Float[N], c Float[N], grad_hidden [N,D]); no [N,V] tensor survives a chunk.
    """
    grad_hidden = torch.empty_like(hidden)
    ce = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    coef = torch.empty_like(ce)
    with torch.autocast(hidden.device.type, enabled=False):  # dtypes are explicit in Unembedding
        for s in range(0, hidden.shape[0], chunk_rows):
            h, y = hidden[s : s + chunk_rows], targets[s : s + chunk_rows]
            has_target = y >= 0
            y = y.clamp(min=0)  # a row without target computes class 0 and is zeroed below: no host-side selection
            e = unembedding.logits(h)  # [n,V]: the reused chunk buffer; everything below is in place
            ce_c, total = exp_shifted_(e, y)
            ce_c = torch.where(has_target, ce_c, 0.0)
            norm = torch.where(has_target, grad_norm_from_exp(e, total, y), 0.0) if grad_norm else None
            c = weigh(s, ce_c, has_target, norm)
            if isinstance(c, tuple):
                c, rescale = c
                grad_hidden[:s].mul_(rescale.to(grad_hidden.dtype))
                coef[:s].mul_(rescale)
                if unembedding.grad is not None:
                    unembedding.grad.mul_(rescale)
            c = torch.where(has_target, c.float(), 0.0)
            grad_hidden[s : s + chunk_rows] = unembedding.backward(logit_grad_(e, total, y, c), h)
            ce[s : s + chunk_rows], coef[s : s + chunk_rows] = ce_c, c
    return ce, coef, grad_hidden


@torch.no_grad()
def ce_and_grad_norm(hidden: Tensor, unembed: Tensor, targets: Tensor, *, chunk_tokens: int) -> tuple[Tensor, Tensor]:
    """No-grad per-token (ce, ‖∂ce/∂logits‖₂ = sqrt(Σ_v p_v² − 2·p_y + 1)), both Float[N], chunk by chunk (never an
    [N,V] tensor). hidden: [N,D], unembed: [V,D], targets: Long[N] (every row a valid target)."""
    rows = max(min(chunk_tokens, hidden.shape[0]), 1)
    unembedding = Unembedding(unembed, rows, dtype=matmul_dtype(hidden), grad=None)
    ce = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    norm = torch.empty_like(ce)
    with torch.autocast(hidden.device.type, enabled=False):
        for s in range(0, hidden.shape[0], chunk_tokens):
            y = targets[s : s + chunk_tokens]
            e = unembedding.logits(hidden[s : s + chunk_tokens])
            ce[s : s + chunk_tokens], total = exp_shifted_(e, y)
            norm[s : s + chunk_tokens] = grad_norm_from_exp(e, total, y)
    return ce, norm


class _WeightedLinearCE(torch.autograd.Function):
    """Σ_i c_i · CE(hidden_i @ Wᵀ, y_i) with its gradient computed chunk by chunk during the forward.

    The per-token coefficients c are known before the forward (detached weights), so the gradient
    ∂/∂logits = c_i·(softmax − onehot) can be folded into hidden/unembed gradients chunk by chunk:
    no [N,V] tensor survives a chunk and no logits are recomputed in the backward.
    """

    @staticmethod
    def forward(ctx, hidden, unembed, targets, coef, chunk_tokens, unembed_grad):
        external = unembed_grad is not None
        grad_unembed = unembed_grad if external else torch.zeros(unembed.shape, dtype=torch.float32, device=unembed.device)
        rows = max(min(chunk_tokens, hidden.shape[0]), 1)
        unembedding = Unembedding(unembed, rows, dtype=matmul_dtype(hidden), grad=grad_unembed)
        ce, _, grad_hidden = chunked_weighted_ce(
            hidden, targets, lambda s, ce, _v, _n: coef[s : s + len(ce)], unembedding, chunk_rows=chunk_tokens
        )
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
