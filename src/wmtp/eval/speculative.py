"""Self-speculative decoding with the MTP heads, greedy or sampled (Gloeckle et al. 2024 §3.2; Stern et al. 2018;
Cai et al. 2024 (Medusa); Leviathan et al. 2023; Chen et al. 2023).

Legend: B sequences, H heads, n ≤ H−1 draft heads, m ≤ n drafts verified in a step, T new positions, D width,
V vocabulary.

One step is one forward, for every sequence in the batch:
    c              the next token, already decided by head 1 (the previous step's bonus or correction token)
    d_1..d_m       drafts: at c's predecessor, head k+1 proposed the k-th token after c
    verify         the trunk's shared blocks and head 1's block over [c, d_1..d_m] with the KV cache: head 1 at c
                   checks d_1, at d_1 checks d_2, ... (`spec_rules`: greedy match, or the speculative-sampling
                   rule), on the device: a drafts accepted, and the next c
    draft          in the same forward, heads 2..n+1 read the z the verify pass computed: their keys/values at all
                   T positions (their KV caches), their block output only at the last accepted position
                   (gathered on the device), unembedded into the next drafts
    one host sync  (a, next c, next drafts) for every sequence; the KV cache commits the accepted positions

The KV cache is pre-allocated (`StaticKVCache`): in-place writes, roll-back by not committing. Heads 2..n+1 run
from their own parameters (no copies, so they never go stale); their output decides only what is verified.

Greedy (temperature 0): every emitted token is head 1's argmax given the emitted prefix, so the output is plain
greedy decoding; `SpeculativeDecoder(model, n_draft=0)` is that decoding through the same code (one forward per
token), and its forwards are HF's own blocks, so it equals HF `generate` greedy bit for bit. The speculative
output equals it wherever head 1's top two logits do not tie to within rounding: a forward over m+1 positions
rounds differently from m+1 one-position forwards (fp32 matmul rows differ by ~1e-7 relative), which no
decoder without batch-invariant kernels avoids; in float64 they agree (tests).

Sampling (temperature > 0, top_p, top_k as HF `generate` applies them): drafts are drawn from the drafting heads'
distributions q after the same transforms, verified against head 1's p; the output is distributed exactly as
head 1's sampling (tests: chi-square against the enumerated distribution). `n_draft=0` is plain sampling.

Batches: sequences that accept different numbers of drafts share a slot count: the slots a sequence rejected but
another kept are masked out of attention (Bool[B,S]). Positions (RoPE) count a sequence's real tokens only, so
holes and left padding do not shift them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from wmtp.eval.kv_cache import StaticKVCache
from wmtp.eval.prompts import encode_prompt
from wmtp.eval.spec_rules import sampling_probs, verify_greedy, verify_sampled
from wmtp.model.mtp import MTPModel


@dataclass
class SpecStats:
    """Counts from decoding. A forward is one sequence's pass through the model (a batched pass over B
    sequences counts B), so `tokens_per_forward` is per sequence, and 1.0 for plain greedy decoding."""

    n_tokens: int = 0
    n_forwards: int = 0
    proposed: list[int] = field(default_factory=list)  # [H−1]: steps in which head k+2 drafted a token
    accepted: list[int] = field(default_factory=list)  # [H−1]: ... and it was accepted (so were those before it)

    @property
    def tokens_per_forward(self) -> float:
        return self.n_tokens / self.n_forwards if self.n_forwards else 0.0

    @property
    def acceptance_per_head(self) -> dict[str, float]:
        """Head k (k ≥ 2) → fraction of its drafts accepted, for the heads that drafted. Acceptance is a prefix, so
        head k's draft is accepted only if heads 2..k−1's were too: this is the unconditional rate per draft."""
        return {str(k + 2): a / p for k, (a, p) in enumerate(zip(self.accepted, self.proposed)) if p}

    def merge(self, other: SpecStats) -> SpecStats:
        n = max(len(self.proposed), len(other.proposed))
        pad = lambda xs: xs + [0] * (n - len(xs))
        return SpecStats(
            self.n_tokens + other.n_tokens,
            self.n_forwards + other.n_forwards,
            [a + b for a, b in zip(pad(self.proposed), pad(other.proposed))],
            [a + b for a, b in zip(pad(self.accepted), pad(other.accepted))],
        )

    def to_dict(self) -> dict:
        return {
            "tokens_per_forward": self.tokens_per_forward,
            "acceptance_per_head": self.acceptance_per_head,
            "n_tokens": self.n_tokens,
            "n_forwards": self.n_forwards,
        }


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters of a decode (temperature > 0; see `spec_rules.sampling_probs`)."""

    temperature: float
    top_p: float = 1.0
    top_k: int = 0
    generator: torch.Generator | None = None  # None: torch's global generator

    def probs(self, logits: Tensor) -> Tensor:
        return sampling_probs(logits, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)


# ---- public API ---------------------------------------------------------------------------------------


def contiguous_draft_heads(model: MTPModel) -> int:
    """How many heads can draft: heads 2..c+1 where head k predicts offset k for k ≤ c+1 (`head_offsets`,
    default 1..H). Speculative decoding chains drafts token after token, so a gap in the offsets ends the chain."""
    offsets = model.head_offsets
    if not offsets or offsets[0] != 1:
        raise ValueError(f"head 1 must predict the next token (head_offsets = {offsets})")
    c = 1
    while c < len(offsets) and offsets[c] == c + 1:
        c += 1
    return c - 1


class SpeculativeDecoder:
    """Decoding of head 1, drafted by heads 2..n_draft+1 inside the verify forward.

    n_draft: draft heads, default all heads whose offsets continue 1, 2, ... (`contiguous_draft_heads`); 0 is plain
    decoding (one forward per token). Holds no weights of its own: weight changes take effect at once.

        dec = SpeculativeDecoder(model)
        outs, stats = dec.generate([[bos, *prompt_ids]], max_new_tokens=128, eos_token_id=eos)
        outs, stats = dec.generate(prompts, max_new_tokens=128, eos_token_id=eos, temperature=0.8,
                                   generator=torch.Generator().manual_seed(0))
    """

    def __init__(self, model: MTPModel, *, n_draft: int | None = None):
        n_max = contiguous_draft_heads(model)
        n_draft = n_max if n_draft is None else n_draft
        if not 0 <= n_draft <= n_max:
            raise ValueError(f"n_draft={n_draft} must be in 0..{n_max} (the heads 2..{n_max + 1} whose offsets "
                             f"continue 1, 2, ...: head_offsets)")  # fmt: skip
        self.model, self.n_draft = model, n_draft
        self.decoder = model.decoder
        self.shared = model.shared_blocks()
        self.head1 = model.head_block(1)
        self.drafters = [model.head_block(k) for k in range(2, n_draft + 2)]
        slots = [b.self_attn.layer_idx for b in [*self.shared, self.head1]]  # draft heads: DRAFT_SLOT
        if len(set(slots)) != len(slots):
            raise ValueError(f"blocks share KV-cache slots (self_attn.layer_idx = {slots}); each needs its own")

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        eos_token_id: int | None,
        stop_token_sequences: Sequence[Sequence[int]] | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        generator: torch.Generator | None = None,
    ) -> tuple[list[list[int]], SpecStats]:
        """New tokens for each prompt (B lists of ids, any lengths) and the counts. A sequence ends after eos, after
        a completed stop sequence (both kept in the output) or after max_new_tokens. temperature 0 is greedy;
        > 0 samples (top_p, top_k as HF `generate`; generator: a seeded torch.Generator makes it reproducible)."""
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be ≥ 0")
        if temperature < 0:
            raise ValueError(f"temperature={temperature} must be ≥ 0")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        sampling = Sampling(temperature, top_p, top_k, generator) if temperature > 0 else None
        if sampling is not None:
            sampling.probs(torch.zeros(2))  # validates top_p, top_k
        stops = [list(s) for s in (stop_token_sequences or ()) if len(s) > 0]
        _check_window(self.model, max(map(len, prompts), default=0) + max_new_tokens)
        was_training = self.model.training
        if was_training:
            self.model.eval()
        try:
            with torch.inference_mode():
                return _Run(self, [list(p) for p in prompts], max_new_tokens, eos_token_id, stops, sampling).decode()
        finally:
            if was_training:
                self.model.train()


def complete(
    model: MTPModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    speculative: bool = True,
    batch_size: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> tuple[list[str], SpecStats]:
    """Completions of text prompts, speculative or plain, and the counts: greedy (temperature 0: the same tokens
    either way) or sampled (seeded: reproducible; the same distribution either way).

    Prompts are encoded like training records (`encode_prompt`); a completion runs to eos or
    max_new_tokens and is decoded without special tokens. batch_size > 1 decodes several prompts per forward.
    """
    decoder = SpeculativeDecoder(model, n_draft=None if speculative else 0)
    generator = torch.Generator(model.unembed.device).manual_seed(seed)
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    texts, stats = [], SpecStats()
    for start in range(0, len(encoded), batch_size):
        outs, st = decoder.generate(encoded[start : start + batch_size], max_new_tokens=max_new_tokens,
                                    eos_token_id=tokenizer.eos_token_id, temperature=temperature, top_p=top_p,
                                    generator=generator)  # fmt: skip
        texts += tokenizer.batch_decode(outs, skip_special_tokens=True)
        stats = stats.merge(st)
    return texts, stats


# ---- implementation -----------------------------------------------------------------------------------


def _check_window(model: MTPModel, length: int) -> None:
    """The blocks run under a full causal mask: refuse sequences longer than a sliding attention window."""
    cfg = model.decoder.config
    window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
    if window is not None and length > window:
        raise ValueError(f"prompt + max_new_tokens = {length} exceeds the trunk's sliding window ({window})")


def _rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class _HeadRefs(NamedTuple):
    """References (not copies) to one head block's parameters and constants, gathered once per `generate` call:
    attribute lookups through nn.Module cost more than the small matmuls they lead to."""

    norm_in: tuple[Tensor, float]
    q: tuple[Tensor, Tensor | None]
    k: tuple[Tensor, Tensor | None]
    v: tuple[Tensor, Tensor | None]
    o: tuple[Tensor, Tensor | None]
    qk_norms: tuple[nn.Module, nn.Module] | None  # Qwen3: RMS norms over head_dim before RoPE
    norm_post: tuple[Tensor, float]
    gate: tuple[Tensor, Tensor | None]
    up: tuple[Tensor, Tensor | None]
    down: tuple[Tensor, Tensor | None]
    act: nn.Module
    head_dim: int
    scaling: float

    @classmethod
    def of(cls, block: nn.Module) -> _HeadRefs:
        at, mlp = block.self_attn, block.mlp
        lin = lambda m: (m.weight, m.bias)
        norm = lambda m: (m.weight, m.variance_epsilon)
        qk = (at.q_norm, at.k_norm) if hasattr(at, "q_norm") else None
        return cls(norm(block.input_layernorm), lin(at.q_proj), lin(at.k_proj), lin(at.v_proj), lin(at.o_proj), qk,
                   norm(block.post_attention_layernorm), lin(mlp.gate_proj), lin(mlp.up_proj), lin(mlp.down_proj),
                   mlp.act_fn, at.head_dim, at.scaling)  # fmt: skip


def _rms(x: Tensor, norm: tuple[Tensor, float]) -> Tensor:
    return F.rms_norm(x, (x.shape[-1],), norm[0], norm[1])


DRAFT_SLOT = -1  # the KV-cache slot of the draft heads (their keys/values side by side: [B, n·nkv, S, hd])


def draft_hidden(heads: Sequence[nn.Module | _HeadRefs], z: Tensor, zq: Tensor, rope: tuple[Tensor, ...],
                 cache: StaticKVCache, allowed: Tensor | None) -> Tensor:  # fmt: skip
    """The head blocks f_2..f_{n+1} over a forward's trunk output z [B,T,D]: their keys/values at all T positions go
    into the cache (one slot, DRAFT_SLOT, heads side by side); their outputs only for one query zq [B,D] per
    sequence (already among z). rope: cos, sin [B,T,hd] of z and cos_q, sin_q [B,hd] of zq; allowed Bool[B,1,1,S]:
    the slots zq may attend to (None: all). Returns [B,n,D], before the final norm.

    Each head's own parameters; the heads share one RoPE, one cache write and one attention call (query head i of
    head j reads key/value head i // rep of head j: grouped-query attention over the side-by-side heads)."""
    hs = [h if isinstance(h, _HeadRefs) else _HeadRefs.of(h) for h in heads]
    cos, sin, cos_q, sin_q = rope
    B, T, _ = z.shape
    hd = hs[0].head_dim
    xs = [_rms(z, h.norm_in) for h in hs]
    xq = [_rms(zq, h.norm_in) for h in hs]
    q = [F.linear(x, *h.q).view(B, -1, hd) for x, h in zip(xq, hs)]  # n × [B,nq,hd]
    k = [F.linear(x, *h.k).view(B, T, -1, hd) for x, h in zip(xs, hs)]  # n × [B,T,nkv,hd]
    if hs[0].qk_norms is not None:  # Qwen3: RMS norms over head_dim between the projection and RoPE
        q = [h.qk_norms[0](t) for t, h in zip(q, hs)]
        k = [h.qk_norms[1](t) for t, h in zip(k, hs)]
    v = torch.cat([F.linear(x, *h.v).view(B, T, -1, hd) for x, h in zip(xs, hs)], dim=2).transpose(1, 2)
    k = _rope(torch.cat(k, dim=2).transpose(1, 2), cos[:, None], sin[:, None])  # [B,n·nkv,T,hd]
    keys, values = cache.update(k, v, DRAFT_SLOT)
    q = _rope(torch.cat(q, dim=1)[:, :, None], cos_q[:, None, None], sin_q[:, None, None])  # [B,n·nq,1,hd]
    att = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed, scale=hs[0].scaling, enable_gqa=True)
    att = att.view(B, len(hs), -1)
    outs = []
    for j, h in enumerate(hs):
        out = zq + F.linear(att[:, j], *h.o)
        y = _rms(out, h.norm_post)
        outs.append(out + F.linear(h.act(F.linear(y, *h.gate)) * F.linear(y, *h.up), *h.down))
    return torch.stack(outs, dim=1)


class _StopRules:
    """Per-sequence stop rules: eos, stop sequences, token budget."""

    def __init__(self, max_new_tokens: int, eos: int | None, stops: list[list[int]]):
        self.max_new, self.eos, self.stops = max_new_tokens, eos, stops

    def emit(self, out: list[int], tokens: list[int]) -> bool:
        """Append tokens one by one until a rule fires; True if the sequence is finished."""
        for t in tokens:
            if len(out) >= self.max_new:
                return True
            out.append(t)
            if t == self.eos or any(out[-len(s) :] == s for s in self.stops):
                return True
        return len(out) >= self.max_new


class _Run:
    """One `generate` call: the batch state between forwards (KV cache, slot mask, the drafts' distributions).
    Token bookkeeping is in Python lists, filled by one device→host copy per step."""

    def __init__(self, dec: SpeculativeDecoder, prompts: list[list[int]], max_new: int, eos: int | None,
                 stops: list[list[int]], sampling: Sampling | None):  # fmt: skip
        self.dec, self.prompts, self.max_new, self.sampling = dec, prompts, max_new, sampling
        self.rules = _StopRules(max_new, eos, stops)
        self.device = dec.model.unembed.device
        width, n = max(map(len, prompts), default=0), dec.n_draft
        # Committed slots per step: one sequence's accepted tokens, or in a batch the most any sequence accepted.
        self.cache = StaticKVCache(width + (max_new + n + 1 if len(prompts) == 1 else (max_new + 1) * (n + 1)))
        cap = self.cache.capacity
        self.causal = torch.ones(cap, cap, dtype=torch.bool, device=self.device).tril()  # row i: slots ≤ i
        self.mask2d: Tensor | None = None  # Bool[B,S]: slot s of sequence b holds one of its tokens
        self.dense = True  # no padding and no holes: plain causal attention is exact
        self.q: Tensor | None = None  # sampling: [B,n,V] the distributions the current drafts were drawn from
        self.heads = [_HeadRefs.of(b) for b in dec.drafters]

    def attention_mask(self, q: int) -> Tensor | None:
        """Bool[B,1,q,S] for queries in the last q slots (True: may attend), or None for plain causal attention."""
        S = self.mask2d.shape[1]
        if self.dense:
            return None if q == 1 or q == S else self.causal[None, None, S - q : S, :S]  # a view
        i = torch.arange(S - q, S, device=self.device)[:, None]  # slot of each query
        allowed = self.causal[None, S - q : S, :S] & self.mask2d[:, None, :]
        allowed |= (torch.arange(S, device=self.device)[None, :] == i)[None]  # a padding query attends to itself:
        return allowed[:, None]  # no empty softmax row

    def step(self, ids: Tensor, positions: Tensor, m: int) -> list[list[int]]:
        """One forward over new tokens ids Long[B,T] (their slots already in mask2d) whose last m are drafts:
        verify them, draft the next ones. Returns per sequence [a, next token, n drafts] (the one host sync)."""
        dec, model = self.dec, self.dec.model
        B, T = ids.shape
        x = dec.decoder.embed_tokens(ids)
        cos, sin = dec.decoder.rotary_emb(x, position_ids=positions)
        kw = {"attention_mask": self.attention_mask(T), "position_ids": positions, "cache": self.cache,
              "use_cache": True, "position_embeddings": (cos, sin)}  # fmt: skip
        for block in dec.shared:
            x = block(x, **kw)
        logits = dec.decoder.norm(dec.head1(x, **kw)[:, T - m - 1 :]) @ model.unembed.T  # [B,m+1,V]
        drafts = ids[:, T - m :]
        if self.sampling is None:
            a, nxt = verify_greedy(logits, drafts)
        else:
            q = self.q[:, :m] if m else logits.new_zeros(B, 0, logits.shape[-1])
            a, nxt = verify_sampled(self.sampling.probs(logits), q, drafts, self.sampling.generator)
        out = [a[:, None], nxt[:, None]]
        if dec.drafters:
            out.append(self.draft(x, (cos, sin), T - m - 1 + a))
        return torch.cat(out, dim=1).tolist()

    def draft(self, z: Tensor, rope: tuple[Tensor, Tensor], at: Tensor) -> Tensor:
        """Drafts Long[B,n] from heads 2..n+1 at position at[b] (Long[B], the last accepted) of the forward's z."""
        dec, B, T = self.dec, z.shape[0], z.shape[1]
        rows = torch.arange(B, device=self.device)
        cos, sin = rope
        allowed = self.causal[self.cache.len + at, : self.cache.len + T]  # [B,S]
        if not self.dense:
            allowed = allowed & self.mask2d
        zq, rope_q = z[rows, at], (cos, sin, cos[rows, at], sin[rows, at])
        h = draft_hidden(self.heads, z, zq, rope_q, self.cache, allowed[:, None, None])
        logits = _rms(h, (dec.decoder.norm.weight, dec.decoder.norm.variance_epsilon)) @ dec.model.unembed.T  # [B,n,V]
        if self.sampling is None:
            return logits.argmax(-1)
        self.q = self.sampling.probs(logits)
        return torch.multinomial(self.q.flatten(0, 1), 1, generator=self.sampling.generator).view(B, -1)

    def select(self, rows: list[int]) -> None:
        """Keep only these batch rows (finished sequences leave)."""
        idx = torch.tensor(rows, device=self.device)
        self.cache.select(idx)
        self.mask2d = self.mask2d[idx]
        if self.q is not None:
            self.q = self.q[idx]

    def commit(self, n_new: int, n_keep: list[int]) -> None:
        """Of the last n_new slots, sequence b keeps its first n_keep[b]: commit up to the longest, mask the rest."""
        crop = n_new - max(n_keep)
        self.cache.commit(n_new - crop)
        if crop:
            self.mask2d = self.mask2d[:, :-crop]
        left = n_new - crop
        if min(n_keep) < left:  # holes: slots some sequences rejected and others kept
            keep = torch.tensor(n_keep, device=self.device)
            self.mask2d[:, -left:] = torch.arange(left, device=self.device)[None] < keep[:, None]
            self.dense = False

    def decode(self) -> tuple[list[list[int]], SpecStats]:
        prompts, n, max_new, rules = self.prompts, self.dec.n_draft, self.max_new, self.rules
        B = len(prompts)
        outs: list[list[int]] = [[] for _ in range(B)]
        stats = SpecStats(proposed=[0] * (self.dec.model.n_heads - 1), accepted=[0] * (self.dec.model.n_heads - 1))
        if max_new == 0 or B == 0:
            return outs, stats

        # Prefill: left-padded prompts, a step with no drafts; positions count real tokens only.
        width = max(map(len, prompts))
        ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=self.device)
        self.mask2d = torch.tensor([[False] * (width - len(p)) + [True] * len(p) for p in prompts], device=self.device)
        self.dense = all(len(p) == width for p in prompts)
        positions = (self.mask2d.long().cumsum(-1) - 1).clamp(min=0)
        res = self.step(ids, positions, 0)
        self.commit(width, [width] * B)
        stats.n_forwards += B
        nxt = [r[1] for r in res]  # each sequence's c, its next token
        drafts = [r[2:] for r in res]
        done = [rules.emit(outs[b], [nxt[b]]) for b in range(B)]
        alive = list(range(B))  # the original index of each batch row
        next_pos = [len(p) for p in prompts]  # position of c

        while True:
            # Finished sequences leave the batch (and their cache rows).
            keep = [r for r, b in enumerate(alive) if not done[b]]
            if not keep:
                break
            if len(keep) < len(alive):
                self.select(keep)
                alive, nxt, drafts, next_pos = ([xs[r] for r in keep] for xs in (alive, nxt, drafts, next_pos))
            # No more drafts than any sequence can use: its remaining budget after c, minus the bonus token.
            m = min(n, max(max_new - len(outs[b]) for b in alive) - 1)

            # One forward of [c, d_1..d_m]: verify, and draft from each sequence's last accepted position.
            step = [[c, *d[:m]] for c, d in zip(nxt, drafts)]
            step_pos = [[p + i for i in range(m + 1)] for p in next_pos]
            self.mask2d = torch.cat([self.mask2d, self.mask2d.new_ones(len(alive), m + 1)], dim=1)
            res = self.step(torch.tensor(step, device=self.device), torch.tensor(step_pos, device=self.device), m)
            stats.n_forwards += len(alive)

            n_acc = [r[0] for r in res]
            for r, (a, c) in enumerate(zip(n_acc, (r[1] for r in res))):
                done[alive[r]] = rules.emit(outs[alive[r]], [*step[r][1 : a + 1], c])
                nxt[r] = c
            for k in range(m):
                stats.proposed[k] += len(alive)
                stats.accepted[k] += sum(a > k for a in n_acc)
            self.commit(m + 1, [a + 1 for a in n_acc])
            drafts = [r[2:] for r in res]
            next_pos = [p + a + 1 for p, a in zip(next_pos, n_acc)]

        stats.n_tokens = sum(map(len, outs))
        return outs, stats
