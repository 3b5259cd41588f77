"""Pretrained trunks from local HF directories (no hub): heads copy the last block, H=1 is the HF model (logits and
loss), the MTP model saves and loads back, and head 1 exports as a plain HF causal LM."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from oracles import evaluate_ce
from wmtp.cli import app
from wmtp.data.tokenizer import train_tokenizer
from wmtp.model.checkpoints import load_model_dir, save_model_dir
from wmtp.model.hf_export import export_head1
from wmtp.model.mtp import MTPModel


def test_local_pretrained_trunk(tmp_path):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=64)
    hf = LlamaForCausalLM(cfg)
    hf.save_pretrained(tmp_path / "trunk")
    model = MTPModel.from_pretrained_trunk(str(tmp_path / "trunk"), n_heads=3)
    ids = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        logits = model(ids)
        torch.testing.assert_close(logits[:, :, 0], hf(ids).logits, rtol=0, atol=1e-5)
    last = dict(model.decoder.layers[-1].named_parameters())
    for k in (2, 3):
        for name, p in model.head_block(k).named_parameters():
            assert torch.equal(p, last[name]) and p.data_ptr() != last[name].data_ptr()


def _save_tiny_hf(directory, model_type="llama", seed=0):
    """A tiny random HF causal LM saved with save_pretrained (what a user's local pretrained model looks like)."""
    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(model_type, vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                               tie_word_embeddings=False)
    hf = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    hf.save_pretrained(directory)
    return hf


def _padded_batch(seed=3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 50, (3, 12), generator=g)
    attn = torch.ones(3, 12, dtype=torch.bool)
    attn[1, 9:] = False
    attn[2, 5:] = False
    ids[~attn] = 0
    loss_mask = attn.clone()
    loss_mask[:, :2] = False  # a prompt: no loss on the first two tokens
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": loss_mask}


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_h1_reproduces_the_hf_loss(tmp_path, model_type):
    hf = _save_tiny_hf(tmp_path / "trunk", model_type)
    model = MTPModel.from_pretrained_trunk(str(tmp_path / "trunk"), n_heads=1)
    batch = _padded_batch()
    ce, valid = evaluate_ce(model, batch, chunk_tokens=16)
    ours = ce[valid].mean()
    labels = torch.where(batch["loss_mask"], batch["input_ids"], -100)
    with torch.no_grad():
        theirs = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"].long(), labels=labels).loss
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("head1_is_trunk_layer", [True, False])
def test_save_load_and_export_head1(tmp_path, head1_is_trunk_layer):
    _save_tiny_hf(tmp_path / "trunk", "qwen2")
    torch.manual_seed(1)
    model = MTPModel.from_pretrained_trunk(str(tmp_path / "trunk"), n_heads=3, head1_is_trunk_layer=head1_is_trunk_layer)
    with torch.no_grad():  # make head 1 differ from the trunk's last block and from the other heads
        for p in model.head_block(1).parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = _padded_batch()
    ids, attn = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        logits = model(ids, attn)

    loaded = load_model_dir(save_model_dir(model, tmp_path / "mtp"))
    exported = AutoModelForCausalLM.from_pretrained(str(export_head1(model, tmp_path / "head1")))
    assert type(exported).__name__ == "Qwen2ForCausalLM"
    assert exported.config.num_hidden_layers == 2 + int(not head1_is_trunk_layer)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, attn), logits, rtol=0, atol=0)
        hf_logits = exported(input_ids=ids, attention_mask=attn.long()).logits
    torch.testing.assert_close(hf_logits[attn], logits[:, :, 0][attn], rtol=0, atol=1e-5)
    assert (hf_logits[attn] - logits[:, :, 1][attn]).abs().max() > 1e-3  # head 1, not another head


def test_export_hf_command(tmp_path):
    tok = train_tokenizer(["def add(a, b):\n    return a + b\n", "print(add(1, 2))\n"] * 20, 300)
    _save_tiny_hf(tmp_path / "trunk")
    model = MTPModel.from_pretrained_trunk(str(tmp_path / "trunk"), n_heads=2, head1_is_trunk_layer=False)
    save_model_dir(model, tmp_path / "mtp", tok)
    result = CliRunner().invoke(app, ["export-hf", "--run", str(tmp_path / "mtp"), "--out", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"))
    assert AutoTokenizer.from_pretrained(str(tmp_path / "hf")).get_vocab() == tok.get_vocab()
    ids = torch.randint(3, 50, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids)[:, :, 0], rtol=0, atol=1e-5)
