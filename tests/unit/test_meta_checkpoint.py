"""Meta's native multi-token layout: a tiny checkpoint written in that layout loads into MTPModel, and every
head's logits equal an independent reimplementation of Meta's architecture (complex rotary, its own attention)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from wmtp.model.checkpoints import CheckpointError
from wmtp.model.meta_checkpoint import ffn_hidden_dim, load_meta_checkpoint, load_meta_tokenizer

PARAMS = {
    "dim": 32, "n_layers": 5, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 50, "multiple_of": 16,
    "ffn_dim_multiplier": 1.3, "norm_eps": 1e-5, "rope_theta": 500000.0, "n_future_tokens": 3,
}


def meta_state_dict(p: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under Meta's key names (layers: n_layers − n + 1 blocks, extra_heads: n − 1)."""
    g = torch.Generator().manual_seed(seed)
    d, hd = p["dim"], p["dim"] // p["n_heads"]
    kv, f = p["n_kv_heads"] * hd, ffn_hidden_dim(p["dim"], p["multiple_of"], p["ffn_dim_multiplier"])

    def rnd(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    def block(prefix):
        return {
            f"{prefix}attention.wq.weight": rnd(d, d), f"{prefix}attention.wk.weight": rnd(kv, d),
            f"{prefix}attention.wv.weight": rnd(kv, d), f"{prefix}attention.wo.weight": rnd(d, d),
            f"{prefix}feed_forward.w1.weight": rnd(f, d), f"{prefix}feed_forward.w2.weight": rnd(d, f),
            f"{prefix}feed_forward.w3.weight": rnd(f, d),
            f"{prefix}attention_norm.weight": 1 + rnd(d, scale=0.1), f"{prefix}ffn_norm.weight": 1 + rnd(d, scale=0.1),
        }

    n = p["n_future_tokens"]
    sd = {"tok_embeddings.weight": rnd(p["vocab_size"], d, scale=1.0), "norm.weight": 1 + rnd(d, scale=0.1),
          "output.weight": rnd(p["vocab_size"], d), "rope.freqs": torch.zeros(hd // 2)}
    for i in range(p["n_layers"] - n + 1):
        sd.update(block(f"layers.{i}."))
    for j in range(n - 1):
        sd.update(block(f"extra_heads.{j}."))
    return sd


# ---- an independent reimplementation of Meta's llama/model.py forward (complex rotary) ------------------------


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotary(x, freqs_cis):
    """x: [B,T,nh,hd]; pairs (2i, 2i+1) are complex numbers rotated by freqs_cis[t, i]."""
    xc = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs_cis[None, :, None, :]).flatten(3)


def meta_block(x, sd, prefix, p, freqs_cis):
    B, T, d = x.shape
    nh, nkv, hd = p["n_heads"], p["n_kv_heads"], p["dim"] // p["n_heads"]
    h = rms_norm(x, sd[prefix + "attention_norm.weight"], p["norm_eps"])
    q = rotary((h @ sd[prefix + "attention.wq.weight"].T).view(B, T, nh, hd), freqs_cis)
    k = rotary((h @ sd[prefix + "attention.wk.weight"].T).view(B, T, nkv, hd), freqs_cis)
    v = (h @ sd[prefix + "attention.wv.weight"].T).view(B, T, nkv, hd)
    out = torch.zeros(B, T, nh, hd)
    for head in range(nh):
        kvh = head // (nh // nkv)
        scores = torch.einsum("btd,bsd->bts", q[:, :, head], k[:, :, kvh]) / math.sqrt(hd)
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        out[:, :, head] = torch.softmax(scores, dim=-1) @ v[:, :, kvh]
    x = x + out.reshape(B, T, d) @ sd[prefix + "attention.wo.weight"].T
    h = rms_norm(x, sd[prefix + "ffn_norm.weight"], p["norm_eps"])
    gate = torch.nn.functional.silu(h @ sd[prefix + "feed_forward.w1.weight"].T)
    return x + (gate * (h @ sd[prefix + "feed_forward.w3.weight"].T)) @ sd[prefix + "feed_forward.w2.weight"].T


def meta_logits(sd, p, tokens):
    """[B,T,n,V]: trunk = layers[:-1]; heads = [layers[-1], *extra_heads] on the trunk output; shared norm/output."""
    T, hd, n = tokens.shape[1], p["dim"] // p["n_heads"], p["n_future_tokens"]
    freqs = 1.0 / (p["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
    freqs_cis = torch.polar(torch.ones(T, hd // 2), torch.outer(torch.arange(T).float(), freqs))
    n_trunk = p["n_layers"] - n + 1
    h = sd["tok_embeddings.weight"][tokens]
    for i in range(n_trunk - 1):
        h = meta_block(h, sd, f"layers.{i}.", p, freqs_cis)
    prefixes = [f"layers.{n_trunk - 1}."] + [f"extra_heads.{j}." for j in range(n - 1)]
    heads = [rms_norm(meta_block(h, sd, pre, p, freqs_cis), sd["norm.weight"], p["norm_eps"]) for pre in prefixes]
    return torch.stack(heads, dim=2) @ sd["output.weight"].T


# ---- tests ---------------------------------------------------------------------------------------------------


def write_checkpoint(directory, params=PARAMS, sd=None):
    directory.mkdir(parents=True, exist_ok=True)
    sd = meta_state_dict(params) if sd is None else sd
    torch.save(sd, directory / "consolidated.pth")
    (directory / "params.json").write_text(json.dumps(params))
    return sd


def test_every_head_matches_the_reference_architecture(tmp_path):
    sd = write_checkpoint(tmp_path / "7B_1T_3")
    model = load_meta_checkpoint(tmp_path / "7B_1T_3")
    assert model.n_heads == 3 and model.head1_is_trunk_layer and len(model.decoder.layers) == 3
    tokens = torch.randint(0, PARAMS["vocab_size"], (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(tokens)
    ref = meta_logits(sd, PARAMS, tokens)
    assert ours.shape == ref.shape == (2, 11, 3, PARAMS["vocab_size"])
    torch.testing.assert_close(ours, ref, rtol=0, atol=2e-5)


def test_more_or_fewer_heads_than_the_checkpoint(tmp_path):
    sd = write_checkpoint(tmp_path / "ckpt")
    tokens = torch.randint(0, PARAMS["vocab_size"], (1, 7), generator=torch.Generator().manual_seed(2))
    ref = meta_logits(sd, PARAMS, tokens)
    with torch.no_grad():
        two = load_meta_checkpoint(tmp_path / "ckpt", n_heads=2)(tokens)
        four_model = load_meta_checkpoint(tmp_path / "ckpt", n_heads=4)
        four = four_model(tokens)
    torch.testing.assert_close(two, ref[:, :, :2], rtol=0, atol=2e-5)
    torch.testing.assert_close(four[:, :, :3], ref, rtol=0, atol=2e-5)
    torch.testing.assert_close(four[:, :, 3], ref[:, :, 0], rtol=0, atol=2e-5)  # a new head copies head 1's block
    new, head1 = four_model.head_block(4).mlp.up_proj.weight, four_model.head_block(1).mlp.up_proj.weight
    assert new.data_ptr() != head1.data_ptr()


def test_bad_checkpoints_are_named(tmp_path):
    sd = meta_state_dict(PARAMS)
    del sd["extra_heads.1.feed_forward.w2.weight"]
    write_checkpoint(tmp_path / "missing", sd=sd)
    with pytest.raises(CheckpointError, match="extra_heads.1.feed_forward.w2.weight"):
        load_meta_checkpoint(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="not a Meta checkpoint"):
        load_meta_checkpoint(tmp_path)


def test_tokenizer_from_the_parent_directory(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["def add(a, b):\n    return a + b", "print(add(1, 2)) # three"] * 40))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(tmp_path / "tokenizer"), vocab_size=50, model_type="bpe",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False, minloglevel=2,
    )
    write_checkpoint(tmp_path / "7B_1T_3")
    tok = load_meta_tokenizer(tmp_path / "7B_1T_3")
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    text = "def add(b, a): return print(a + b)"
    assert tok(text, add_special_tokens=False).input_ids == sp.encode(text)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 0)  # pads with unk
