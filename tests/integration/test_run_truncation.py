"""Records cut at data.max_len are counted: meta.json holds how many of each split and the tokens they lost."""

from __future__ import annotations

import json
import logging

from wmtp.config import load_config
from wmtp.data.collate import encode_records
from wmtp.train.run import build_run

TINY = ["data.synthetic.n_problems=20", "data.vocab_size=300", "model.d_model=32", "model.n_layers=2",
        "model.n_attn_heads=2", "model.n_heads=2", "train.batch_size=4", "train.max_steps=1", "train.progress=false"]


def full_lengths(records, tokenizer) -> list[int]:
    return [len(e.input_ids) for e in encode_records(records, tokenizer, 10**9)]


def test_meta_counts_records_cut_at_max_len(tmp_path, caplog):
    max_len = 130  # the synthetic prompts are 63-153 tokens, the records 83-238
    # no token cache; a token cache entry written (in 2 processes), then read
    for name, extra in (("plain", []), ("first", ["data.token_cache=true", "data.num_proc=2"]),
                        ("cached", ["data.token_cache=true"])):
        cfg = load_config(None, [*TINY, f"data.max_len={max_len}", f"data.cache_dir={tmp_path / 'cache'}",
                                 f"run_dir={tmp_path / name}", *extra])
        with caplog.at_level(logging.WARNING, logger="wmtp.train.run"):
            run = build_run(cfg)
        meta = json.loads((tmp_path / name / "meta.json").read_text())
        tok = run.data.tokenizer
        for split, records in (("train", run.data.train), ("valid", run.data.valid)):
            lengths = full_lengths(records, tok)
            prompts = [len(tok(r.prompt, add_special_tokens=False)["input_ids"]) + 1 for r in records]
            cut = [n for n, p in zip(lengths, prompts) if n > max_len and p < max_len]  # kept, but shortened
            assert meta[f"n_{split}_truncated"] == len(cut) > 0
            assert meta[f"n_{split}_tokens_truncated"] == sum(n - max_len for n in cut)
        assert f"train: {meta['n_train_truncated']} records truncated at data.max_len={max_len}" in caplog.text
        caplog.clear()


def test_meta_counts_zero_when_nothing_is_cut(tmp_path):
    cfg = load_config(None, [*TINY, "data.max_len=512", f"data.cache_dir={tmp_path / 'cache'}",
                             f"run_dir={tmp_path / 'run'}"])
    build_run(cfg)
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["n_train_truncated"] == meta["n_valid_truncated"] == meta["n_train_tokens_truncated"] == 0
