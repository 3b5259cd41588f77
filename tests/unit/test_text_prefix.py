"""Every text is encoded the tokenizer's own way (wmtp.data.tokenizer.encode_text): wmtp's tokenizer [bos] + text; a
pretrained one as `tokenizer(text)` encodes it by default (Llama-style: bos first; SmolLM2-style: nothing). Prompts,
training records and HellaSwag contexts share it, and greedy generation equals plain transformers greedy."""

from __future__ import annotations

import pytest
import torch
from test_gguf import write_tiny_gguf

from wmtp.data.collate import encode_records
from wmtp.data.records import Record
from wmtp.data.tokenizer import encode_text, load_tokenizer, text_prefix, train_tokenizer
from wmtp.eval.generate import SamplingConfig, generate
from wmtp.eval.prompts import encode_prompt
from wmtp.model.mtp import MTPModel

TEXT = "def add(a, b):\n    return a + b\n"
PROMPTS = ["def add(a, b):\n", "print(add(1, ", "def sub"]


@pytest.fixture(scope="module", params=[True, False], ids=["adds-bos", "adds-nothing"])
def pretrained(request, tmp_path_factory):
    """(gguf path, its tokenizer, the HF model it holds, whether the tokenizer adds bos by default)."""
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    hf, _ = write_tiny_gguf(path, add_bos=request.param)
    return path, load_tokenizer(str(path)), hf, request.param


def test_wmtp_tokenizer_keeps_bos_plus_text():
    tok = train_tokenizer([TEXT] * 20, 300)
    assert tok(TEXT)["input_ids"] == tok(TEXT, add_special_tokens=False)["input_ids"]  # it adds nothing itself
    assert text_prefix(tok) == [tok.bos_token_id]
    assert encode_text(tok, TEXT) == encode_prompt(tok, TEXT) == [tok.bos_token_id] + tok.encode(
        TEXT, add_special_tokens=False)


def test_pretrained_tokenizer_encodes_as_by_default(pretrained):
    _, tok, _, adds_bos = pretrained
    plain = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert text_prefix(tok) == ([tok.bos_token_id] if adds_bos else [])
    assert encode_prompt(tok, TEXT) == tok(TEXT)["input_ids"] == ([tok.bos_token_id] if adds_bos else []) + plain


def test_training_records_start_as_prompts(pretrained):
    _, tok, _, adds_bos = pretrained
    records = [Record(id="r", problem_id="p", prompt="def add(a, b):\n", completion="    return a + b\n",
                      is_correct=True, source="test")]
    (encoded,) = encode_records(records, tok, max_len=1000)
    prompt = encode_prompt(tok, records[0].prompt)
    assert encoded.input_ids[: encoded.n_prompt] == prompt and encoded.n_prompt == len(prompt)
    assert encoded.input_ids[encoded.n_prompt :] == tok.encode(records[0].completion, add_special_tokens=False) + [
        tok.eos_token_id]
    assert (encoded.input_ids[0] == tok.bos_token_id) == adds_bos


def test_greedy_generation_equals_transformers_greedy(pretrained):
    path, tok, hf, _ = pretrained
    model = MTPModel.from_pretrained_trunk(str(path), n_heads=2)
    ours = generate(model, tok, PROMPTS, sampling=SamplingConfig(max_new_tokens=12, stop=()), progress=False,
                    batch_size=2)
    fast = generate(model, tok, PROMPTS, sampling=SamplingConfig(max_new_tokens=12, stop=(), speculative=True),
                    progress=False)
    theirs = []
    for prompt in PROMPTS:
        ids = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = hf.generate(**ids, do_sample=False, max_new_tokens=12, eos_token_id=tok.eos_token_id,
                              pad_token_id=tok.pad_token_id)
        theirs.append([tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)])
    assert ours == fast == theirs
