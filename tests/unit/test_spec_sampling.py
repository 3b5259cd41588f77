"""Speculative sampling (eval/spec_rules.py, SpeculativeDecoder with temperature > 0): the output distribution is
head 1's sampling distribution.

A tiny vocabulary (V=6) makes the first three tokens' joint distribution enumerable (216 sequences, from full
forwards of head 1 without any cache). Many sequences are drawn in one batched `generate` (identical prompts: the
rows share nothing but the forward) and a chi-square test compares the counts with the enumeration. The test
has power: two wrong acceptance rules (always accepting the draft; drawing a rejected token from p instead of the
residual) are rejected by the same test. Seeds are fixed, so the test is deterministic.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from scipy.stats import chisquare
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

import wmtp.eval.speculative as spec
from wmtp.config import ModelConfig
from wmtp.eval.spec_rules import sampling_probs, verify_greedy, verify_sampled
from wmtp.eval.speculative import SpeculativeDecoder
from wmtp.model.mtp import MTPModel

V, PROMPT, N = 6, [1, 4, 3], 40_000


def tiny_model(seed: int = 0) -> MTPModel:
    """Random heads with large weights: head 1's p and the drafting heads' q differ (and are far from uniform)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(n_heads=3, d_model=16, n_layers=2, n_attn_heads=2, max_seq_len=64, init_std=0.6)
    return MTPModel.from_config(cfg, vocab_size=V, pad_id=0, bos_id=1, eos_id=2).eval().double()


@torch.no_grad()
def exact_distribution(model: MTPModel, **transforms) -> dict[tuple[int, ...], float]:
    """P(x1, x2, x3 | PROMPT) under head 1's sampling distribution, by enumeration with cache-free forwards."""
    probs = {}
    for x1, x2 in itertools.product(range(V), repeat=2):
        p = sampling_probs(model(torch.tensor([PROMPT + [x1, x2]]))[0, -3:, 0], **transforms)  # [3,V]
        for x3 in range(V):
            probs[(x1, x2, x3)] = float(p[0, x1] * p[1, x2] * p[2, x3])
    return probs


def sampled_counts(model: MTPModel, n_draft: int | None, seed: int, **transforms) -> tuple[dict, spec.SpecStats]:
    gen = torch.Generator().manual_seed(seed)
    outs, stats = SpeculativeDecoder(model, n_draft=n_draft).generate(
        [PROMPT] * N, max_new_tokens=3, eos_token_id=None, generator=gen, **transforms)  # fmt: skip
    counts: dict[tuple[int, ...], int] = {}
    for o in outs:
        counts[tuple(o)] = counts.get(tuple(o), 0) + 1
    return counts, stats


def chi2_pvalue(counts: dict, probs: dict) -> float:
    """Chi-square goodness of fit; cells expected below 5 are pooled into one."""
    obs, exp, rest_o, rest_e = [], [], 0, 0.0
    assert set(counts) <= {k for k, p in probs.items() if p > 0}, "a sequence of probability 0 was sampled"
    for key, p in probs.items():
        if N * p >= 5:
            obs.append(counts.get(key, 0))
            exp.append(N * p)
        else:
            rest_o, rest_e = rest_o + counts.get(key, 0), rest_e + N * p
    if rest_e > 0:
        obs.append(rest_o)
        exp.append(rest_e)
    exp = torch.tensor(exp, dtype=torch.float64)
    exp *= N / exp.sum()
    return float(chisquare(obs, exp.tolist()).pvalue)


TRANSFORMS = [{"temperature": 1.0}, {"temperature": 0.7, "top_k": 4, "top_p": 0.9}]


@pytest.mark.parametrize("transforms", TRANSFORMS)
@pytest.mark.parametrize("n_draft", [2, 1, 0])
def test_output_distribution_is_head1_sampling(transforms, n_draft):
    model = tiny_model()
    counts, stats = sampled_counts(model, n_draft, seed=1, **transforms)
    assert chi2_pvalue(counts, exact_distribution(model, **transforms)) > 1e-3
    if n_draft:
        rates = stats.acceptance_per_head
        assert 0.05 < rates["2"] < 0.95, rates  # the premise: drafts are accepted and rejected


def always_accept(p, q, drafts, generator):
    """A wrong rule: every draft accepted, the bonus from p."""
    B, m = drafts.shape
    return torch.full((B,), m, dtype=torch.long), torch.multinomial(p[:, m], 1, generator=generator)[:, 0]


def resample_from_p(p, q, drafts, generator):
    """A wrong rule: the right acceptance test, but a rejected draft is replaced by a draw from p, not the residual."""
    a, _ = verify_sampled(p, q, drafts, generator)
    return a, torch.multinomial(p[torch.arange(len(a)), a], 1, generator=generator)[:, 0]


@pytest.mark.parametrize("wrong_rule", [always_accept, resample_from_p])
def test_the_distribution_test_rejects_wrong_rules(monkeypatch, wrong_rule):
    model = tiny_model()
    probs = exact_distribution(model, temperature=1.0)
    monkeypatch.setattr(spec, "verify_sampled", wrong_rule)
    counts, _ = sampled_counts(model, None, seed=1, temperature=1.0)
    assert chi2_pvalue(counts, probs) < 1e-6


def test_seeded_sampling_is_reproducible():
    model, dec = tiny_model(), None
    dec = SpeculativeDecoder(model)
    run = lambda seed: dec.generate([PROMPT, [1, 5]], max_new_tokens=12, eos_token_id=None, temperature=1.0,
                                    generator=torch.Generator().manual_seed(seed))[0]  # fmt: skip
    assert run(3) == run(3) and run(3) != run(4)


def test_sampling_probs_equal_hf_warpers():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    for t, k, p in [(1.0, 0, 1.0), (0.7, 0, 0.9), (1.3, 5, 1.0), (0.5, 10, 0.8), (1.0, 0, 0.01)]:
        x = TemperatureLogitsWarper(t)(None, logits.clone())
        x = TopKLogitsWarper(k)(None, x) if k else x
        x = TopPLogitsWarper(p)(None, x) if p < 1 else x
        torch.testing.assert_close(sampling_probs(logits, temperature=t, top_k=k, top_p=p), x.softmax(-1))
    with pytest.raises(ValueError, match="temperature"):
        sampling_probs(logits, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        sampling_probs(logits, temperature=1.0, top_p=0.0)


def test_verify_rules_against_loops():
    """The vectorised rules equal per-sequence loops over the drafts (greedy exactly; sampled: acceptance with the
    same uniforms)."""
    g = torch.Generator().manual_seed(0)
    B, m = 64, 3
    logits = torch.randn(B, m + 1, V, generator=g)
    drafts = torch.randint(V, (B, m), generator=g)
    drafts[::2, 0] = logits[::2, 0].argmax(-1)  # some accepted prefixes
    drafts[::4, 1] = logits[::4, 1].argmax(-1)
    a, nxt = verify_greedy(logits, drafts)
    for b in range(B):
        n = 0
        while n < m and drafts[b, n] == logits[b, n].argmax():
            n += 1
        assert (a[b], nxt[b]) == (n, logits[b, n].argmax())
    p, q = logits.softmax(-1), torch.randn(B, m, V, generator=g).softmax(-1)
    a, _ = verify_sampled(p, q, drafts, torch.Generator().manual_seed(5))
    u = torch.rand(B, m, generator=torch.Generator().manual_seed(5))
    for b in range(B):
        n = 0
        while n < m and u[b, n] < min(1.0, float(p[b, n, drafts[b, n]] / q[b, n, drafts[b, n]])):
            n += 1
        assert a[b] == n
