"""Greedy self-speculative decoding with the MTP heads (Gloeckle et al. 2024 §3.2; Stern et al. 2018).

Legend: B sequences, H heads, n ≤ H−1 draft heads, m ≤ n drafts in a step, S cache slots, D width, V vocabulary.

One step, for every sequence in the batch:
    c              the next token, already decided by head 1 (the previous step's bonus token)
    d_1..d_m       drafts: at c's predecessor, head k+1 predicted the k-th token after c
    verify         one forward of [c, d_1..d_m] through the shared blocks and head 1's block with the KV cache:
                   head 1 at c checks d_1, at d_1 checks d_2, ...
    accept         the longest prefix d_1..d_a that head 1 agrees with, then head 1's own token after d_a (the
                   bonus, next step's c): a+1 tokens per forward, a ∈ [0, m]
    roll back      crop the KV caches past the rejected drafts
    draft          heads 2..H at the last accepted position give the next drafts

Heads 2..H are whole transformer blocks over z, so each keeps its own KV cache of z at every position. In the
same step, after verification, their keys/values are computed for the step's positions (z is causal, so z at
accepted positions is final) and rolled back like the trunk's; their full blocks run only at the one position
the drafts come from. They run fused (`_DraftHeads`: stacked weights, a few batched matmuls for all heads).

The head-1 path runs the model's own HF blocks with one `DynamicCache` (each block at its `self_attn.layer_idx`).
Sequences of a batch that accept different numbers of drafts share a slot count: the slots a sequence rejected
but another kept are masked out of attention (Bool[B,S]) and only slots all rejected are cropped. Positions
(RoPE) count a sequence's real tokens only, so holes and left padding do not shift them.

The output is plain greedy decoding of head 1, token for token: every emitted token is head 1's argmax given
exactly the emitted prefix. `SpeculativeDecoder(model, n_draft=0)` is that reference, through the same code with
no drafts (one forward per token). Drafts decide only what is verified, never what is emitted. In float32 the
two can still differ where head 1's top two logits tie to within rounding (a forward over m+1 positions rounds
differently from m+1 one-token forwards); in float64 they agree (tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import DynamicCache, PreTrainedTokenizerBase

from wmtp.eval.prompts import encode_prompt
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
        pad = lambda xs: xs + [0] * (n - len(xs))  # noqa: E731
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


# ---- public API ---------------------------------------------------------------------------------------


class SpeculativeDecoder:
    """Greedy decoding of head 1, drafted by heads 2..n_draft+1 and verified in one forward per step.

    Built once per model and reused across calls: it snapshots the draft heads' weights (stacked, norms folded
    in), so build it after the weights are final. n_draft: draft heads, default H−1; 0 is plain greedy decoding.

        dec = SpeculativeDecoder(model)
        outs, stats = dec.generate([[bos, *prompt_ids]], max_new_tokens=128, eos_token_id=eos)
    """

    def __init__(self, model: MTPModel, *, n_draft: int | None = None):
        n_draft = model.n_heads - 1 if n_draft is None else n_draft
        if not 0 <= n_draft <= model.n_heads - 1:
            raise ValueError(f"n_draft={n_draft} must be in 0..{model.n_heads - 1} (heads 2..H draft)")
        self.model, self.n_draft = model, n_draft
        self.decoder = model.decoder
        self.shared = model.shared_blocks()
        self.head1 = model.head_block(1)
        slots = [b.self_attn.layer_idx for b in [*self.shared, self.head1]]
        if len(set(slots)) != len(slots):
            raise ValueError(f"blocks share KV-cache slots (self_attn.layer_idx = {slots}); each needs its own")
        self.W = model.unembed  # [V,D]
        with torch.no_grad():
            self.drafter = _DraftHeads([model.head_block(k) for k in range(2, n_draft + 2)], self.decoder.norm, self.W)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        eos_token_id: int | None,
        stop_token_sequences: Sequence[Sequence[int]] | None = None,
    ) -> tuple[list[list[int]], SpecStats]:
        """New tokens for each prompt (B lists of ids, any lengths) and the counts. A sequence ends after eos, after
        a completed stop sequence (both kept in the output) or after max_new_tokens."""
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be ≥ 0")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        stops = [list(s) for s in (stop_token_sequences or ()) if len(s) > 0]
        _check_window(self.model, max(map(len, prompts), default=0) + max_new_tokens)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                return _Run(self, [list(p) for p in prompts], max_new_tokens, eos_token_id, stops).decode()
        finally:
            self.model.train(was_training)


def complete(
    model: MTPModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    speculative: bool = True,
    batch_size: int = 1,
) -> tuple[list[str], SpecStats]:
    """Greedy completions of text prompts, speculative or plain (the same tokens either way), and the counts.

    Prompts are encoded like training records (`encode_prompt`); a completion runs to eos or
    max_new_tokens and is decoded without special tokens. batch_size > 1 decodes several prompts per forward.
    """
    decoder = SpeculativeDecoder(model, n_draft=None if speculative else 0)
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    texts, stats = [], SpecStats()
    for start in range(0, len(encoded), batch_size):
        outs, st = decoder.generate(encoded[start : start + batch_size], max_new_tokens=max_new_tokens,
                                    eos_token_id=tokenizer.eos_token_id)  # fmt: skip
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


class _KVBuffer:
    """The draft heads' growable key/value cache [B, n, nkv, capacity, hd] whose first `len` slots are live:
    appending writes in place and cropping moves the length, so neither copies the cache."""

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.len = 0

    def append(self, k: Tensor, v: Tensor) -> None:
        """k, v: [B,T,n,nkv,hd] (the layout the projection gives)."""
        B, T, n, nkv, hd = k.shape
        if self.k is None or self.len + T > self.k.shape[3]:
            cap = max(128, 2 * (self.len + T))
            new_k, new_v = k.new_empty(B, n, nkv, cap, hd), v.new_empty(B, n, nkv, cap, hd)
            if self.k is not None:
                new_k[:, :, :, : self.len], new_v[:, :, :, : self.len] = self.live()
            self.k, self.v = new_k, new_v
        self.k[:, :, :, self.len : self.len + T] = k.permute(0, 2, 3, 1, 4)
        self.v[:, :, :, self.len : self.len + T] = v.permute(0, 2, 3, 1, 4)
        self.len += T

    def live(self) -> tuple[Tensor, Tensor]:
        return self.k[:, :, :, : self.len], self.v[:, :, :, : self.len]

    def crop(self, n: int) -> None:
        self.len -= n

    def select(self, rows: Tensor) -> None:
        self.k, self.v = self.k[rows], self.v[rows]


def _rotated_rows(w: Tensor, hd: int) -> Tensor:
    """Rows of a projection W [h·hd, ...] such that x @ result.T = rotate_half(x @ W.T) per head (RoPE's partner)."""
    w = w.view(-1, 2, hd // 2, *w.shape[1:])
    return torch.cat([-w[:, 1:], w[:, :1]], dim=1).reshape(-1, *w.shape[3:])


class _DraftHeads:
    """Heads 2..n+1 fused: their blocks' weights stacked, so all heads run as a few batched matmuls.

    Drafting needs two things from a head block: keys/values at every position (its KV cache of z), and the
    block's output at one position per sequence. Norm weights are folded into the projections after them
    (rms(x)·g @ Wᵀ = rms(x) @ (W·g)ᵀ), the final norm's into the unembedding, and RoPE's rotate_half into extra
    query/key projection rows (unless q/k norms sit in between). Rounding differs slightly from the HF blocks,
    which can only change which drafts get accepted, never the output.
    """

    def __init__(self, blocks: list[nn.Module], final_norm: nn.Module, W: Tensor):
        self.n = len(blocks)
        self.w_out = W * final_norm.weight  # [V,D]: unembedding with the final norm's weight folded in
        self.eps_out = final_norm.variance_epsilon
        if not blocks:
            return
        a0 = blocks[0].self_attn
        self.hd, self.nq, self.nkv = a0.head_dim, a0.config.num_attention_heads, a0.config.num_key_value_heads
        self.scaling = a0.scaling
        self.eps_in = blocks[0].input_layernorm.variance_epsilon
        self.eps_post = blocks[0].post_attention_layernorm.variance_epsilon
        self.act = blocks[0].mlp.act_fn
        # Qwen3-style RMS norms over head_dim on queries and keys, between the projection and RoPE.
        self.qk_norm = hasattr(a0, "q_norm")
        self.q_norm = torch.stack([b.self_attn.q_norm.weight for b in blocks])[:, None] if self.qk_norm else None
        self.k_norm = torch.stack([b.self_attn.k_norm.weight for b in blocks])[:, None] if self.qk_norm else None
        self.eps_qk = a0.q_norm.variance_epsilon if self.qk_norm else 0.0

        def lin(layer: nn.Linear, g: Tensor | None = None) -> tuple[Tensor, Tensor]:  # weight [out,in], bias [out]
            w = layer.weight if g is None else layer.weight * g
            return w, (layer.bias if layer.bias is not None else w.new_zeros(w.shape[0]))

        def with_rotated(pair: tuple[Tensor, Tensor]) -> list[tuple[Tensor, Tensor]]:
            w, b = pair
            return [pair] if self.qk_norm else [pair, (_rotated_rows(w, self.hd), _rotated_rows(b, self.hd))]

        def concat(pairs: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:  # one matmul for all heads
            return torch.cat([w for w, _ in pairs]), torch.cat([b for _, b in pairs])

        def per_head(pairs: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:  # [n,in,out] for bmm, [n,1,out]
            return torch.stack([w.T for w, _ in pairs]), torch.stack([b for _, b in pairs])[:, None]

        q, kv, o, gu, down = [], [], [], [], []
        for blk in blocks:
            at, mlp = blk.self_attn, blk.mlp
            g_in, g_post = blk.input_layernorm.weight, blk.post_attention_layernorm.weight
            q += with_rotated(lin(at.q_proj, g_in))
            kv += [*with_rotated(lin(at.k_proj, g_in)), lin(at.v_proj, g_in)]
            o.append(lin(at.o_proj))
            gu.append(concat([lin(mlp.gate_proj, g_post), lin(mlp.up_proj, g_post)]))
            down.append(lin(mlp.down_proj))
        self.w_q, self.b_q = concat(q)  # [n·(1|2)·nq·hd, D]: per head q (then rotate_half(q))
        self.w_kv, self.b_kv = concat(kv)  # [n·(2|3)·nkv·hd, D]: per head k (then rotate_half(k)), v
        self.wt_o, self.b_o = per_head(o)  # [n, nq·hd, D]
        self.wt_gu, self.b_gu = per_head(gu)  # [n, D, 2F]: gate then up
        self.wt_d, self.b_d = per_head(down)  # [n, F, D]

    def keys_values(self, z: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
        """Every head's keys and values at new positions. z: [B,T,D]; cos, sin: [B,T,hd] → 2 × [B,T,n,nkv,hd]."""
        B, T, D = z.shape
        kv = F.linear(F.rms_norm(z, (D,), eps=self.eps_in), self.w_kv, self.b_kv)
        cos, sin = cos[:, :, None, None], sin[:, :, None, None]
        if self.qk_norm:
            k, v = kv.view(B, T, self.n, 2, self.nkv, self.hd).unbind(3)
            return _rope(F.rms_norm(k, (self.hd,), eps=self.eps_qk) * self.k_norm, cos, sin), v
        k, k_rot, v = kv.view(B, T, self.n, 3, self.nkv, self.hd).unbind(3)
        return k * cos + k_rot * sin, v

    def hidden(self, zq: Tensor, cos: Tensor, sin: Tensor, kv: _KVBuffer, mask: Tensor | None) -> Tensor:
        """Every head's block output at one position per sequence, before the final norm.

        zq: [B,D] z there (its keys/values already in kv); cos, sin: [B,hd]; mask: Bool[B,S] the slots it may
        attend to (None: all). Returns [n,B,D]."""
        B, D = zq.shape
        q = F.linear(F.rms_norm(zq, (D,), eps=self.eps_in), self.w_q, self.b_q)
        cos, sin = cos[:, None, None], sin[:, None, None]
        if self.qk_norm:
            q = F.rms_norm(q.view(B, self.n, self.nq, self.hd), (self.hd,), eps=self.eps_qk) * self.q_norm
            q = _rope(q, cos, sin)
        else:
            q, q_rot = q.view(B, self.n, 2, self.nq, self.hd).unbind(2)
            q = q * cos + q_rot * sin
        # GQA: query head i reads kv head i // rep; a kv head's rep query heads ride in the query-length dim.
        q = q.reshape(B * self.n, self.nkv, self.nq // self.nkv, self.hd)
        k, v = (t.reshape(B * self.n, self.nkv, kv.len, self.hd) for t in kv.live())  # views
        attn_mask = None if mask is None else mask.repeat_interleave(self.n, dim=0)[:, None, None, :]
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scaling)  # [B·n,nkv,rep,hd]
        att = att.reshape(B, self.n, self.nq * self.hd).transpose(0, 1)  # [n,B,nq·hd]
        x = zq[None] + torch.baddbmm(self.b_o, att, self.wt_o)  # [n,B,D]
        gate, up = torch.baddbmm(self.b_gu, F.rms_norm(x, (D,), eps=self.eps_post), self.wt_gu).chunk(2, dim=-1)
        return x + torch.baddbmm(self.b_d, self.act(gate) * up, self.wt_d)

    def tokens(self, h: Tensor) -> Tensor:
        """Greedy tokens Long[B,n] from block outputs h: [n,B,D]."""
        return (F.rms_norm(h, (h.shape[-1],), eps=self.eps_out) @ self.w_out.T).argmax(-1).T


class _Run:
    """One `generate` call: the batch state between forwards (head-1 path cache, draft heads' cache, slot mask).
    Token bookkeeping is in Python lists (one device→host copy per tensor per step)."""

    def __init__(self, dec: SpeculativeDecoder, prompts: list[list[int]], max_new: int, eos: int | None,
                 stops: list[list[int]]):  # fmt: skip
        self.dec, self.prompts, self.max_new = dec, prompts, max_new
        self.rules = _StopRules(max_new, eos, stops)
        self.device = dec.W.device
        self.cache = DynamicCache()
        self.kv = _KVBuffer()  # slots mirror `cache`
        self.mask2d: Tensor | None = None  # Bool[B,S]: slot s of sequence b holds one of its tokens
        self.dense = True  # no padding and no holes: plain causal attention is exact

    def attention_mask(self, q: int) -> Tensor | None:
        """Bool[B,1,q,S] for queries in the last q slots (True: may attend), or None for plain causal attention."""
        S = self.mask2d.shape[1]
        if self.dense:
            if q == 1 or q == S:
                return None
            return torch.ones(q, S, dtype=torch.bool, device=self.device).tril(S - q)[None, None]
        i = torch.arange(q, device=self.device)[:, None] + (S - q)  # slot of each query
        j = torch.arange(S, device=self.device)[None, :]
        allowed = (j <= i)[None] & self.mask2d[:, None, :]
        allowed |= (j == i)[None]  # a padding query attends to itself: no empty softmax row
        return allowed[:, None]

    def forward(self, ids: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The head-1 path over new tokens (their slots already in mask2d). ids, positions: Long[B,T].
        Returns head 1's argmax Long[B,T], z [B,T,D] and RoPE cos, sin [B,T,hd]."""
        dec = self.dec
        x = dec.decoder.embed_tokens(ids)
        cos, sin = dec.decoder.rotary_emb(x, position_ids=positions)
        kw = {"attention_mask": self.attention_mask(ids.shape[1]), "position_ids": positions, "cache": self.cache,
              "use_cache": True, "position_embeddings": (cos, sin)}  # fmt: skip
        for block in dec.shared:
            x = block(x, **kw)
        h1 = dec.decoder.norm(dec.head1(x, **kw))
        return (h1 @ dec.W.T).argmax(-1), x, cos, sin

    def add_draft_keys(self, z: Tensor, cos: Tensor, sin: Tensor) -> None:
        """Append the draft heads' keys/values at the last forward's positions (before rolling back)."""
        if self.dec.drafter.n:
            self.kv.append(*self.dec.drafter.keys_values(z, cos, sin))

    def drafts(self, z: Tensor, cos: Tensor, sin: Tensor, at: list[int]) -> list[list[int]]:
        """Drafts [B][n] from the draft heads at position at[b] of the last forward."""
        drafter = self.dec.drafter
        if not drafter.n:
            return [[] for _ in at]
        if len(at) == 1:
            zq, cq, sq = z[:, at[0]], cos[:, at[0]], sin[:, at[0]]
        else:
            rows, cols = torch.arange(len(at), device=self.device), torch.tensor(at, device=self.device)
            zq, cq, sq = z[rows, cols], cos[rows, cols], sin[rows, cols]
        return drafter.tokens(drafter.hidden(zq, cq, sq, self.kv, None if self.dense else self.mask2d)).tolist()

    def select(self, rows: list[int]) -> None:
        """Keep only these batch rows (finished sequences leave)."""
        idx = torch.tensor(rows, device=self.device)
        self.cache.batch_select_indices(idx)
        self.mask2d = self.mask2d[idx]
        if self.dec.drafter.n:
            self.kv.select(idx)

    def roll_back(self, n_new: int, n_keep: list[int]) -> None:
        """Of the last n_new slots, sequence b keeps its first n_keep[b]: crop what all reject, mask the rest.
        The draft heads' keys/values of the new slots must be in already (so both caches crop alike)."""
        crop = n_new - max(n_keep)
        if crop:
            self.cache.crop(-crop)
            self.mask2d = self.mask2d[:, :-crop]
            self.kv.crop(crop)
        left = n_new - crop
        if min(n_keep) < left:  # holes: slots some sequences rejected and others kept
            keep = torch.tensor(n_keep, device=self.device)
            self.mask2d[:, -left:] = torch.arange(left, device=self.device)[None] < keep[:, None]
            self.dense = False

    def decode(self) -> tuple[list[list[int]], SpecStats]:
        prompts, n, max_new, rules = self.prompts, self.dec.drafter.n, self.max_new, self.rules
        B = len(prompts)
        outs: list[list[int]] = [[] for _ in range(B)]
        n_heads = self.dec.model.n_heads
        stats = SpecStats(proposed=[0] * (n_heads - 1), accepted=[0] * (n_heads - 1))
        if max_new == 0 or B == 0:
            return outs, stats

        # Prefill: left-padded prompts; positions count real tokens only.
        width = max(map(len, prompts))
        ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=self.device)
        self.mask2d = torch.tensor([[False] * (width - len(p)) + [True] * len(p) for p in prompts], device=self.device)
        self.dense = all(len(p) == width for p in prompts)
        positions = (self.mask2d.long().cumsum(-1) - 1).clamp(min=0)
        greedy, z, cos, sin = self.forward(ids, positions)
        stats.n_forwards += B
        nxt = greedy[:, -1].tolist()  # each sequence's c, its next token
        done = [rules.emit(outs[b], [nxt[b]]) for b in range(B)]
        alive = list(range(B))  # the original index of each batch row
        next_pos = [len(p) for p in prompts]  # position of c
        if all(done):
            stats.n_tokens = sum(map(len, outs))
            return outs, stats
        self.add_draft_keys(z, cos, sin)
        drafts = self.drafts(z, cos, sin, [width - 1] * B)

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

            # Verify: one forward of [c, d_1..d_m].
            step = [[c, *d[:m]] for c, d in zip(nxt, drafts)]
            step_pos = [[p + i for i in range(m + 1)] for p in next_pos]
            self.mask2d = torch.cat([self.mask2d, self.mask2d.new_ones(len(alive), m + 1)], dim=1)
            greedy, z, cos, sin = self.forward(torch.tensor(step, device=self.device),
                                               torch.tensor(step_pos, device=self.device))  # fmt: skip
            stats.n_forwards += len(alive)

            # Accept the longest prefix of drafts head 1 agrees with, then head 1's bonus token.
            n_acc = []
            for r, g in enumerate(greedy.tolist()):
                a = 0
                while a < m and step[r][a + 1] == g[a]:
                    a += 1
                n_acc.append(a)
                done[alive[r]] = rules.emit(outs[alive[r]], [*step[r][1 : a + 1], g[a]])
                nxt[r] = g[a]
            for k in range(m):
                stats.proposed[k] += len(alive)
                stats.accepted[k] += sum(a > k for a in n_acc)
            if all(done[b] for b in alive):
                break

            # Draft heads' keys/values for the step's slots, roll back past the rejected drafts, draft again
            # from each sequence's last accepted position.
            self.add_draft_keys(z, cos, sin)
            self.roll_back(m + 1, [a + 1 for a in n_acc])
            drafts = self.drafts(z, cos, sin, n_acc)
            next_pos = [p + a + 1 for p, a in zip(next_pos, n_acc)]

        stats.n_tokens = sum(map(len, outs))
        return outs, stats
