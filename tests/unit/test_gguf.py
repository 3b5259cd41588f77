"""`.gguf` paths everywhere a pretrained model is named: a tiny GGUF written here (llama.cpp's layout: q/k rows
permuted, gpt2 BPE tokenizer metadata) loads as the HF model it was written from; errors say what is missing (the
file, or the `gguf` extra); the Rho-1 reference's kind and identity. A real file: tests/integration/test_real_model.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from wmtp.config import load_config
from wmtp.data.records import DataError
from wmtp.data.tokenizer import BOS, EOS, PAD, load_tokenizer, train_tokenizer
from wmtp.eval.evaluate import load_eval_model
from wmtp.model.checkpoints import CheckpointError
from wmtp.model.gguf import GGUFError, is_gguf, load_gguf_causal_lm, load_gguf_config
from wmtp.model.mtp import MTPModel
from wmtp.train.memory import model_for_estimate
from wmtp.weighting.reference import load_reference_model, reference_identity, reference_tokenizer, resolve_reference

gguf = pytest.importorskip("gguf", reason='the gguf extra: pip install -e ".[gguf]"')


def _permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """HF's rotate-half q/k rows → llama.cpp's interleaved order (what its converter writes)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path, *, add_bos: bool = False) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A 2-layer Llama (GQA 4/2, tied embeddings) and a byte-level BPE written as one GGUF file (f32 tensors)."""
    tok = train_tokenizer(["def add(a, b):\n    return a + b\n", "print(add(1, 2))\n"] * 20, 300)
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True, rms_norm_eps=1e-5)).eval()
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2), w.add_context_length(128), w.add_embedding_length(32), w.add_feed_forward_length(64)
    w.add_head_count(4), w.add_head_count_kv(2), w.add_rope_freq_base(10000.0), w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tok))
    renamed = {BOS: "<s>", EOS: "</s>", PAD: "<pad>"}  # a pretrained tokenizer's names, not wmtp's own
    vocab = [renamed.get(t, t) for t in sorted(tok.get_vocab(), key=tok.get_vocab().get)]
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    w.add_tokenizer_model("gpt2"), w.add_tokenizer_pre("default"), w.add_token_list(vocab)
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_token_types([3 if t in renamed.values() else 1 for t in vocab])
    w.add_bos_token_id(tok.bos_token_id), w.add_eos_token_id(tok.eos_token_id), w.add_pad_token_id(tok.pad_token_id)
    w.add_add_bos_token(add_bos)
    sd = {k: v.detach() for k, v in hf.state_dict().items()}
    names = {"self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate",
             "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
             "post_attention_layernorm": "ffn_norm"}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"].numpy())
    w.add_tensor("output_norm.weight", sd["model.norm.weight"].numpy())
    for i in range(2):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_q.weight", _permute(sd[p + "self_attn.q_proj.weight"], 4).numpy())
        w.add_tensor(f"blk.{i}.attn_k.weight", _permute(sd[p + "self_attn.k_proj.weight"], 2).numpy())
        for hf_name, gguf_name in names.items():
            w.add_tensor(f"blk.{i}.{gguf_name}.weight", sd[f"{p}{hf_name}.weight"].numpy())
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    return hf, tok


def test_a_gguf_file_loads_as_the_model_and_tokenizer_it_was_written_from(tmp_path):
    path = tmp_path / "tiny.gguf"
    hf, tok = write_tiny_gguf(path)
    ids = torch.randint(3, len(tok), (2, 9))
    model = MTPModel.from_pretrained_trunk(str(path), n_heads=3)
    assert "quantization_config" not in model.trunk.config.to_dict()
    assert model.unembed.data_ptr() == model.decoder.embed_tokens.weight.data_ptr()  # still tied
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[:, :, 0], hf(ids).logits, rtol=0, atol=1e-5)
    loaded = load_tokenizer(str(path))
    text = "def add(x, y):\n\treturn x + y  # ✓\n"
    assert loaded(text, add_special_tokens=False)["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (tok.bos_token_id, tok.eos_token_id,
                                                                               tok.pad_token_id)
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token) == ("<s>", "</s>", "<pad>")

    cfg = load_config(None, [f"model.pretrained={path}", f"data.tokenizer={path}", "model.n_heads=3"])
    shapes = {n: p.shape for n, p in model_for_estimate(cfg).named_parameters()}
    assert shapes == {n: p.shape for n, p in model.named_parameters()}
    reference = load_reference_model(resolve_reference(str(path)))
    with torch.no_grad():
        torch.testing.assert_close(reference(ids)[:, :, 0], hf(ids).logits, rtol=0, atol=1e-5)


def test_is_gguf():
    assert is_gguf("models/SmolLM2.Q4_1.gguf") and is_gguf("/x/M.GGUF")
    assert not is_gguf("HuggingFaceTB/SmolLM2-135M") and not is_gguf("/x/gguf")


def test_missing_packages_name_the_extra(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(GGUFError, match=r'package\(s\) gguf: pip install -e "\.\[gguf\]"'):
        load_gguf_causal_lm(tmp_path / "m.gguf")
    with pytest.raises(DataError, match=r"pip install -e"):
        load_tokenizer(str(tmp_path / "m.gguf"))


def test_missing_file_is_an_error_everywhere(tmp_path):
    missing = str(tmp_path / "none.gguf")
    with pytest.raises(GGUFError, match="does not exist"):
        load_gguf_config(missing)
    with pytest.raises(GGUFError, match="does not exist"):
        MTPModel.from_pretrained_trunk(missing, n_heads=2)
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer(missing)
    with pytest.raises(CheckpointError, match="could not be loaded.*does not exist"):
        load_eval_model(hf_model=missing)
    with pytest.raises(DataError, match="does not exist"):
        resolve_reference(missing)


def test_reference_from_a_gguf_file(tmp_path):
    path = tmp_path / "ref.gguf"
    path.write_bytes(b"GGUF first")
    source = resolve_reference(str(path))
    assert source.kind == "gguf" and source.model_dir is None
    first = reference_identity(source)
    assert first.startswith("gguf:")
    path.write_bytes(b"GGUF second")
    assert reference_identity(source) != first
    with pytest.raises(DataError, match="could not be read as a GGUF model"):  # a header, nothing else
        reference_tokenizer(source)
    with pytest.raises(GGUFError, match="could not be read as a GGUF model"):
        load_gguf_config(path)
