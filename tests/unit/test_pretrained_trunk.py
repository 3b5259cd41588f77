"""A trunk loaded from a local HF directory (no hub): heads copy its last block, head 1 is the HF model."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

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
