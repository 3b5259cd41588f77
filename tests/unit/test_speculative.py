"""Self-speculative decoding (eval/speculative.py): output equals greedy decoding token for token (DESIGN §8).

Models are float64 so that a verify forward over several positions and one-token forwards round alike (in float32
a near-tie of head 1's top logits could flip either way). Three kinds of model:
- random HF-initialised MTP models (drafts almost never accepted: the reject-everything path);
- the oracle: a context-free model that greedily walks a fixed cycle f over the vocabulary, whose head k is built to
  predict f^k (every draft accepted), with variants whose heads are wrong or random;
- the noisy oracle: the oracle with random attention weights added, so that outputs depend on the context and
  drafts are accepted partially (every acceptance length occurs: the cache roll-back path).
"""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from wmtp.config import ModelConfig
from wmtp.eval.kv_cache import StaticKVCache
from wmtp.eval.speculative import (
    DRAFT_SLOT,
    SpecStats,
    SpeculativeDecoder,
    contiguous_draft_heads,
    draft_hidden,
)
from wmtp.model.mtp import MTPModel

V = 64


# ---- the decoder on one prompt or a batch, speculative or plain (n_draft=0) ------------------------------------


def speculative_generate(model: MTPModel, prompt: torch.Tensor | list[int], *, n_draft: int | None = None,
                         **kw) -> tuple[list[int], SpecStats]:  # fmt: skip
    """One prompt (Long[T], Long[1,T] or a list of ids) → (new tokens, counts)."""
    if isinstance(prompt, torch.Tensor):
        if prompt.dim() == 2:
            if prompt.shape[0] != 1:
                raise ValueError(f"speculative_generate takes one prompt, got a batch of {prompt.shape[0]}")
            prompt = prompt[0]
        prompt = prompt.tolist()
    outs, stats = SpeculativeDecoder(model, n_draft=n_draft).generate([list(prompt)], **kw)
    return outs[0], stats


def greedy_generate(model: MTPModel, prompt: torch.Tensor | list[int], **kw) -> list[int]:
    """Plain KV-cached greedy decoding of one prompt, one forward per token: the reference."""
    return speculative_generate(model, prompt, n_draft=0, **kw)[0]


def speculative_generate_batch(model: MTPModel, prompts: list[list[int]], *, n_draft: int | None = None,
                               **kw) -> tuple[list[list[int]], SpecStats]:  # fmt: skip
    return SpeculativeDecoder(model, n_draft=n_draft).generate(prompts, **kw)


def greedy_generate_batch(model: MTPModel, prompts: list[list[int]], **kw) -> list[list[int]]:
    return speculative_generate_batch(model, prompts, n_draft=0, **kw)[0]


def random_model(n_heads: int, *, seed: int = 0, head1: bool = True) -> MTPModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(n_heads=n_heads, head1_is_trunk_layer=head1, d_model=32, n_layers=2, n_attn_heads=4,
                      max_seq_len=256, init_std=0.1)  # fmt: skip
    return MTPModel.from_config(cfg, vocab_size=V, pad_id=0, bos_id=1, eos_id=2).eval().double()


def qwen3_model(n_heads: int = 3, seed: int = 0) -> MTPModel:
    """A Qwen3 trunk (q/k norms, grouped-query attention: 4 query heads share 2 kv heads)."""
    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(
        "qwen3", vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=256, tie_word_embeddings=True,
        initializer_range=0.1,
    )  # fmt: skip
    trunk = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    model = MTPModel.from_trunk(trunk, n_heads=n_heads).eval().double()
    with torch.no_grad():  # from_trunk copies the last block: make the heads differ from head 1
        for p in model.heads.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def cycle(seed: int) -> torch.Tensor:
    """f: a random permutation of the vocabulary that is one V-cycle (so f^k has no fixed point for 0 < k < V)."""
    perm = torch.randperm(V, generator=torch.Generator().manual_seed(seed))
    f = torch.empty(V, dtype=torch.long)
    f[perm] = perm.roll(-1)
    return f


def oracle_model(n_heads: int, *, seed: int = 0, head_shift: int = 0, mlp_scale: float = 1.0,
                 attn_noise: float = 0.0) -> tuple[MTPModel, torch.Tensor]:  # fmt: skip
    """A model whose head 1 greedily walks the cycle f and whose head k predicts f^(k+head_shift).

    Embeddings are one-hot (D = V, tied unembedding); attention outputs and the shared blocks' MLPs are zero, so
    z = e_x for the current token x. Head k's MLP maps the normalised e_x through gate = up = identity to
    silu(√D)·√D·e_x and down = the permutation matrix of f^k, so its output e_x + c·e_{f^k(x)} has its largest
    coordinate, hence its largest logit, at f^k(x). With head_shift=1 every draft is wrong; attn_noise adds random
    attention weights (context dependence, partial acceptance).
    """
    torch.manual_seed(seed)
    cfg = ModelConfig(n_heads=n_heads, d_model=V, n_layers=2, n_attn_heads=4, max_seq_len=256)
    model = MTPModel.from_config(cfg, vocab_size=V, pad_id=0, bos_id=1, eos_id=2).eval().double()
    f, ident = cycle(seed), torch.arange(V)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        model.decoder.embed_tokens.weight.copy_(torch.eye(V))
        blocks = [*model.decoder.layers, *model.heads]
        for p in (p for b in blocks for p in b.parameters() if p.dim() == 2):
            p.zero_()
        fk = ident
        for k in range(1, n_heads + 1):
            fk = f[fk]
            mlp = model.head_block(k).mlp
            mlp.gate_proj.weight[:V, :V] = torch.eye(V)
            mlp.up_proj.weight[:V, :V] = torch.eye(V)
            mlp.down_proj.weight[f[fk] if k > 1 and head_shift else fk, ident] = mlp_scale
        for b in blocks if attn_noise else ():
            for lin in (b.self_attn.q_proj, b.self_attn.k_proj, b.self_attn.v_proj, b.self_attn.o_proj):
                lin.weight.add_(torch.randn(lin.weight.shape, generator=gen, dtype=torch.float64) * attn_noise)
    return model, f


def noisy_oracle(n_heads: int, seed: int = 0) -> MTPModel:
    return oracle_model(n_heads, seed=seed, mlp_scale=0.5, attn_noise=0.08)[0]


def walk(f: torch.Tensor, x: int, n: int) -> list[int]:
    out = []
    for _ in range(n):
        x = int(f[x])
        out.append(x)
    return out


@torch.no_grad()
def naive_greedy(model: MTPModel, prompt: list[int], max_new: int, eos: int | None = None) -> list[int]:
    """Argmax of head 1's logits over a full forward each step: no cache, no drafts."""
    out: list[int] = []
    for _ in range(max_new):
        t = int(model(torch.tensor([prompt + out]))[0, -1, 0].argmax())
        out.append(t)
        if t == eos:
            break
    return out


def random_prompts(rng: random.Random, n: int, max_len: int = 12) -> list[list[int]]:
    return [[rng.randrange(V) for _ in range(rng.randint(1, max_len))] for _ in range(n)]


def cut(tokens: list[int], eos: int | None = None, stops: list[list[int]] = ()) -> list[int]:
    """The reference's stop rule: keep tokens up to and including the first eos or completed stop sequence."""
    for i, t in enumerate(tokens):
        if t == eos or any(tokens[: i + 1][-len(s) :] == s for s in stops):
            return tokens[: i + 1]
    return tokens


# ---- exactness ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_heads", [2, 3, 4])
def test_greedy_reference_equals_naive_argmax_loop(n_heads):
    rng = random.Random(n_heads)
    for model in (random_model(n_heads, seed=n_heads), noisy_oracle(n_heads, seed=n_heads)):
        for prompt in random_prompts(rng, 6):
            n = rng.randint(1, 16)
            assert greedy_generate(model, prompt, max_new_tokens=n, eos_token_id=None) == naive_greedy(model, prompt, n)


@pytest.mark.parametrize("n_heads", [2, 3, 4])
def test_speculative_equals_greedy_on_random_models(n_heads):
    rng = random.Random(10 + n_heads)
    for seed in range(3):
        model = random_model(n_heads, seed=seed, head1=seed != 1)  # seed 1: head 1 is an extra block
        for prompt in random_prompts(rng, 5):
            n = rng.randint(1, 30)
            ref = greedy_generate(model, prompt, max_new_tokens=n, eos_token_id=None)
            assert len(ref) == n
            assert speculative_generate(model, prompt, max_new_tokens=n, eos_token_id=None)[0] == ref


@pytest.mark.parametrize("n_heads", [2, 3, 4])
def test_speculative_equals_greedy_with_partial_acceptance(n_heads):
    """Noisy oracles accept some drafts and reject others: every roll-back length occurs, and the output stays
    head 1's greedy output (checked against the naive loop too)."""
    rng = random.Random(20 + n_heads)
    total = SpecStats()
    for seed in range(2):
        model = noisy_oracle(n_heads, seed=seed)
        for prompt in random_prompts(rng, 5):
            n = rng.randint(1, 40)
            ref = greedy_generate(model, prompt, max_new_tokens=n, eos_token_id=None)
            out, stats = speculative_generate(model, prompt, max_new_tokens=n, eos_token_id=None)
            assert out == ref
            total = total.merge(stats)
        ref = naive_greedy(model, prompt, n)
        assert speculative_generate(model, prompt, max_new_tokens=n, eos_token_id=None)[0] == ref
    rates = total.acceptance_per_head
    assert 0.1 < rates["2"] < 0.9, rates  # the premise: partial acceptance
    assert total.n_tokens > total.n_forwards  # drafts were accepted


def test_speculative_equals_greedy_on_a_gqa_qwen3_trunk():
    model, rng = qwen3_model(3), random.Random(3)
    for prompt in random_prompts(rng, 8):
        n = rng.randint(1, 25)
        ref = naive_greedy(model, prompt, n)
        assert greedy_generate(model, prompt, max_new_tokens=n, eos_token_id=None) == ref
        assert speculative_generate(model, prompt, max_new_tokens=n, eos_token_id=None)[0] == ref


def test_greedy_reference_equals_hf_generate():
    model, rng = random_model(3, seed=5), random.Random(5)
    for prompt in random_prompts(rng, 4):
        hf = model.trunk.generate(
            input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            do_sample=False, max_new_tokens=12, eos_token_id=2, pad_token_id=0,
        )[0, len(prompt) :].tolist()  # fmt: skip
        assert greedy_generate(model, prompt, max_new_tokens=12, eos_token_id=2) == hf


@pytest.mark.parametrize("n_heads", [3, 4])
def test_eos_inside_an_accepted_draft(n_heads):
    """The oracle accepts every draft, so a step emits H tokens: an eos anywhere but at the step's end is inside an
    accepted draft, and nothing after it may be emitted."""
    model, f = oracle_model(n_heads)
    prompt = [5, 9]
    walk_ = walk(f, 9, 40)
    for j in range(1, 3 * n_heads):  # emitted index of eos: 0 is the prefill token, 1..H the first step, ...
        eos = walk_[j]
        out, stats = speculative_generate(model, prompt, max_new_tokens=40, eos_token_id=eos)
        assert out == walk_[: j + 1] == greedy_generate(model, prompt, max_new_tokens=40, eos_token_id=eos)
        assert stats.n_forwards == 1 + -(-j // n_heads)  # ceil(j / H) verify steps after the prefill


@pytest.mark.parametrize("n_heads", [2, 3, 4])
def test_eos_and_stop_sequences_equal_greedy(n_heads):
    """eos = a token the model emits (at varying depths), stop sequences = pairs of consecutive emitted tokens."""
    rng = random.Random(30 + n_heads)
    model = noisy_oracle(n_heads, seed=7)
    for prompt in random_prompts(rng, 6):
        full = greedy_generate(model, prompt, max_new_tokens=30, eos_token_id=None)
        eos = rng.choice(full)
        i = rng.randrange(len(full) - 1)
        stops = [full[i : i + 2], [V + 5, 1]]  # the second never completes
        for kw in ({"eos_token_id": eos}, {"eos_token_id": None, "stop_token_sequences": stops}):
            ref = greedy_generate(model, prompt, max_new_tokens=30, **kw)
            assert ref == cut(full, kw["eos_token_id"], kw.get("stop_token_sequences", []))
            assert speculative_generate(model, prompt, max_new_tokens=30, **kw)[0] == ref


def test_every_token_budget_equals_a_prefix_of_greedy():
    model = noisy_oracle(4, seed=2)
    oracle, f = oracle_model(4, seed=2)
    prompt = [3, 14, 15]
    full = greedy_generate(model, prompt, max_new_tokens=25, eos_token_id=None)
    for n in range(26):
        assert speculative_generate(model, prompt, max_new_tokens=n, eos_token_id=None)[0] == full[:n]
        assert speculative_generate(oracle, prompt, max_new_tokens=n, eos_token_id=None)[0] == walk(f, 15, n)


@pytest.mark.parametrize("n_heads", [2, 4])
def test_batched_decoding_equals_one_sequence_at_a_time(n_heads):
    """Prompts of different lengths (left padding), different acceptance per sequence (holes in the shared cache),
    eos and budgets cutting inside drafts for sequences that are further along."""
    rng = random.Random(40 + n_heads)
    model = noisy_oracle(n_heads, seed=4)
    ragged = random_prompts(rng, 6, max_len=15)
    same_length = [[rng.randrange(V) for _ in range(9)] for _ in range(4)]  # no padding: holes come later
    for prompts, eos in ((ragged, None), (ragged, 7), (ragged, 33), (same_length, None)):
        ref = [greedy_generate(model, p, max_new_tokens=23, eos_token_id=eos) for p in prompts]
        out, stats = speculative_generate_batch(model, prompts, max_new_tokens=23, eos_token_id=eos)
        assert out == ref
        assert greedy_generate_batch(model, prompts, max_new_tokens=23, eos_token_id=eos) == ref
        assert stats.n_tokens == sum(map(len, ref))
    assert 0 < stats.acceptance_per_head["2"] < 1


# ---- acceptance -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_heads", [2, 3, 4])
def test_oracle_heads_accept_everything(n_heads):
    model, f = oracle_model(n_heads, seed=n_heads)
    for last in (0, 17, 63):
        n = 1 + 10 * n_heads  # the prefill token, then 10 steps of H tokens
        out, stats = speculative_generate(model, [4, last], max_new_tokens=n, eos_token_id=None)
        assert out == walk(f, last, n) == greedy_generate(model, [4, last], max_new_tokens=n, eos_token_id=None)
        assert stats.acceptance_per_head == {str(k): 1.0 for k in range(2, n_heads + 1)}
        assert stats.n_forwards == 11 and stats.tokens_per_forward == pytest.approx(n / 11)


@pytest.mark.parametrize("n_heads", [2, 3, 4])
def test_wrong_heads_accept_nothing_and_change_nothing(n_heads):
    """Heads predicting f^(k+1) instead of f^k: every draft is rejected, one token per forward, same output."""
    model, f = oracle_model(n_heads, seed=n_heads, head_shift=1)
    out, stats = speculative_generate(model, [4, 20], max_new_tokens=30, eos_token_id=None)
    assert out == walk(f, 20, 30)
    assert stats.acceptance_per_head == {str(k): 0.0 for k in range(2, n_heads + 1)}
    assert stats.tokens_per_forward == 1.0


def test_random_heads_accept_about_nothing_and_change_nothing():
    model, f = oracle_model(4, seed=3)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.heads.parameters():
            p.copy_(torch.randn_like(p) * (0.5 if p.dim() == 2 else 1.0))
    total, rng = SpecStats(), random.Random(3)
    for prompt in random_prompts(rng, 10):
        out, stats = speculative_generate(model, prompt, max_new_tokens=30, eos_token_id=None)
        assert out == walk(f, prompt[-1], 30)
        total = total.merge(stats)
    assert total.acceptance_per_head["2"] < 0.1 and total.tokens_per_forward < 1.1


# ---- the draft heads ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: random_model(4, seed=8), lambda: random_model(3, seed=9, head1=False),
                                  qwen3_model])  # fmt: skip
@torch.no_grad()
def test_draft_hidden_equals_the_head_blocks(make):
    """draft_hidden (the head blocks' own weights, one query position, heads side by side) equals f_k(z) at every
    position, and writes every head's keys/values at every position into its slot."""
    model = make()
    ids = torch.tensor([[5, 8, 13, 21, 34, 55, 1, 2, 3, 4]])
    z, ctx = model.trunk_forward(ids)
    cos, sin = ctx.position_embeddings
    T = ids.shape[1]
    blocks = [model.head_block(k) for k in range(2, model.n_heads + 1)]
    ref = torch.stack([model._run_block(b, z, ctx)[0] for b in blocks], dim=1)  # [T,n,D]
    for t in range(T):
        cache = StaticKVCache(T)
        allowed = (torch.arange(T)[None] <= t)[:, None, None]
        h = draft_hidden(blocks, z, z[:, t], (cos, sin, cos[:, t], sin[:, t]), cache, allowed)
        torch.testing.assert_close(h[0], ref[t], rtol=1e-5, atol=1e-5)  # HF norms use float32 statistics
        nkv = model.decoder.config.num_key_value_heads
        assert cache.keys[DRAFT_SLOT].shape[1:3] == (len(blocks) * nkv, T) and cache.len == 0  # written, uncommitted


# ---- errors -------------------------------------------------------------------------------------------------


def test_bad_arguments_are_refused():
    model = random_model(3)
    with pytest.raises(ValueError, match="n_draft"):
        speculative_generate(model, [1, 2], max_new_tokens=3, eos_token_id=None, n_draft=3)
    with pytest.raises(ValueError, match="at least one token"):
        speculative_generate(model, [], max_new_tokens=3, eos_token_id=None)
    with pytest.raises(ValueError, match="one prompt"):
        speculative_generate(model, torch.ones(2, 3, dtype=torch.long), max_new_tokens=3, eos_token_id=None)
    assert speculative_generate(model, [1, 2], max_new_tokens=0, eos_token_id=None)[0] == []
    model.head_block(1).self_attn.layer_idx = 0  # the trunk's last block writing into block 0's cache slot
    with pytest.raises(ValueError, match="share KV-cache slots"):
        greedy_generate(model, [1, 2], max_new_tokens=3, eos_token_id=None)


def test_stats_count_forwards_and_drafts():
    model, _ = oracle_model(3, seed=1)
    _, stats = speculative_generate(model, [2, 3], max_new_tokens=8, eos_token_id=None)
    # prefill → 1 token; steps of 3 → 4, 7; the last step has room for one token only: no drafts, 1 token.
    assert (stats.n_tokens, stats.n_forwards) == (8, 4)
    assert (stats.proposed, stats.accepted) == ([2, 2], [2, 2])
    d = stats.to_dict()
    assert d["tokens_per_forward"] == 2.0 and d["acceptance_per_head"] == {"2": 1.0, "3": 1.0}
    _, stats = speculative_generate(model, [2, 3], max_new_tokens=8, eos_token_id=None, n_draft=1)
    assert stats.acceptance_per_head == {"2": 1.0}  # head 3 did not draft
    _, stats = SpeculativeDecoder(model, n_draft=0).generate([[2, 3]], max_new_tokens=8, eos_token_id=None)
    assert stats.acceptance_per_head == {} and stats.tokens_per_forward == 1.0


# ---- float32 ties ---------------------------------------------------------------------------------------------


def tied_fp32_model(rel: float, seed: int = 2) -> tuple[MTPModel, list[int], int, int]:
    """A float32 oracle (with attention noise: context-dependent) whose first greedy token a gets a rival b with
    unembedding row (1 + rel)·W[a]: an exact tie (rel = 0: the lower index wins) or a near tie (rel relative)."""
    model = oracle_model(3, seed=seed, attn_noise=0.04)[0].float()
    prompt = [7, 30, 12, 5]
    a = greedy_generate(model, prompt, max_new_tokens=1, eos_token_id=None)[0]
    b = (a + 1) % V if a == 0 else a - 1
    with torch.no_grad():
        model.unembed[b] = model.unembed[a] * (1 + rel)
    return model, prompt, a, b


def hf_greedy(model: MTPModel, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.trunk.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                               max_new_tokens=n, eos_token_id=None, pad_token_id=0)  # fmt: skip
    return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("rel", [0.0, 2.0**-23, 1e-6])
def test_float32_ties_pick_the_same_token_in_every_path(rel):
    """Head 1's top two logits tie exactly, or differ by one float32 ulp (relative) or by 1e-6: greedy through
    our decoder, HF generate and speculative decoding emit the same tokens. Greedy runs HF's own blocks one
    position per forward like HF generate, so the two compute the same bits; speculative verification computes
    the tied logits in a multi-position forward, and still agrees here (its rounding differs from one-position
    forwards by ~1e-7 relative in the hidden state, which dot products with equal or proportional rows share)."""
    model, prompt, a, b = tied_fp32_model(rel)
    n = 20
    ref = greedy_generate(model, prompt, max_new_tokens=n, eos_token_id=None)
    assert ref[0] == min(a, b) if rel == 0 else ref[0] in (a, b)
    assert ref == hf_greedy(model, prompt, n)
    out, stats = speculative_generate(model, prompt, max_new_tokens=n, eos_token_id=None)
    assert out == ref
    assert stats.tokens_per_forward > 2  # most drafts were accepted: the tied tokens came from multi-position forwards


def test_only_heads_with_contiguous_offsets_draft():
    """Leap heads (head_offsets not 1..H) cannot chain drafts past a gap: the contiguous prefix drafts, a longer
    n_draft is refused, greedy output is unchanged."""
    model = noisy_oracle(4, seed=5)
    prompt = [3, 9, 27]
    ref = greedy_generate(model, prompt, max_new_tokens=15, eos_token_id=None)
    model.head_offsets = (1, 2, 4, 5)
    assert contiguous_draft_heads(model) == 1
    out, stats = speculative_generate(model, prompt, max_new_tokens=15, eos_token_id=None)
    assert out == ref and set(stats.acceptance_per_head) == {"2"}
    with pytest.raises(ValueError, match="n_draft"):
        SpeculativeDecoder(model, n_draft=2)
    model.head_offsets = (1, 3, 4, 5)
    assert SpeculativeDecoder(model).n_draft == 0
    model.head_offsets = (2, 3, 4, 5)
    with pytest.raises(ValueError, match="next token"):
        SpeculativeDecoder(model)
