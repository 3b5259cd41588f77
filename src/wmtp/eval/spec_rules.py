"""Verification rules of speculative decoding, on the device: which drafts to accept and the next token.

Legend: B sequences, m drafts verified in a step, V vocabulary. Position i of a verify forward (i = 0..m) holds
the input token before draft d_{i+1}; head 1 there gives the target distribution p_i (or logits) for d_{i+1}.

Greedy: accept the longest prefix d_1..d_a with d_{i+1} = argmax p_i, then the bonus argmax p_a.

Sampling (Leviathan et al. 2023, Chen et al. 2023): draft d_{i+1} was drawn from q_i; accept it with probability
min(1, p_i(d)/q_i(d)); at the first rejection a, draw the next token from norm(max(0, p_a − q_a)); when all m
are accepted, draw the bonus from p_m. Every emitted token is then distributed exactly as head 1 samples it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def sampling_probs(logits: Tensor, *, temperature: float, top_p: float = 1.0, top_k: int = 0) -> Tensor:
    """Head 1's (or a drafting head's) sampling distribution [..., V] from logits [..., V], as HF `generate`
    samples: logits / temperature, then keep the top_k largest (0: all), then the smallest set of largest-
    probability tokens whose mass exceeds top_p (1: all; the most likely token always stays), renormalised."""
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0 for sampling")
    if not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(f"top_p={top_p} must be in (0, 1] and top_k={top_k} ≥ 0")
    x = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature  # ≥ fp32 for a bf16 model's p/q
    if 0 < top_k < x.shape[-1]:
        x = x.masked_fill(x < x.topk(top_k, dim=-1).values[..., -1:], float("-inf"))
    if top_p < 1:
        sorted_x, order = x.sort(dim=-1)  # ascending, as HF's TopPLogitsWarper
        drop = sorted_x.softmax(-1).cumsum(-1) <= 1 - top_p
        drop[..., -1] = False
        x = x.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return x.softmax(-1)


def accepted_prefix(ok: Tensor) -> Tensor:
    """Long[B]: the number of leading True in each row of ok Bool[B,m]."""
    return ok.cummin(-1).values.sum(-1)


def verify_greedy(logits: Tensor, drafts: Tensor) -> tuple[Tensor, Tensor]:
    """logits [B,m+1,V] of head 1, drafts Long[B,m] → (accepted count a Long[B], next token Long[B])."""
    greedy = logits.argmax(-1)  # [B,m+1]
    a = accepted_prefix(drafts == greedy[:, :-1])
    return a, greedy.gather(1, a[:, None])[:, 0]


def verify_sampled(p: Tensor, q: Tensor, drafts: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """p [B,m+1,V] head 1's sampling distributions, q [B,m,V] the distributions the drafts Long[B,m] were drawn
    from → (accepted count a Long[B], next token Long[B]: from the residual at a < m, from p_m at a = m)."""
    B, m = drafts.shape
    p_x = p[:, :m].gather(-1, drafts[..., None])[..., 0]
    q_x = q.gather(-1, drafts[..., None])[..., 0]
    u = torch.rand(B, m, generator=generator, dtype=p.dtype, device=p.device)
    a = accepted_prefix(u * q_x < p_x)  # accept with probability min(1, p/q)
    rows = torch.arange(B, device=p.device)
    p_a = p[rows, a]
    q_a = torch.cat([q, q.new_zeros(B, 1, q.shape[-1])], dim=1)[rows, a]  # q_m = 0: the residual is p_m
    residual = (p_a - q_a).clamp(min=0)
    residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, p_a)  # p_a = q_a: never rejected
    return a, torch.multinomial(residual, 1, generator=generator)[:, 0]
