"""Tokenisation of large datasets: a process pool, and an on-disk cache of the encoded records.

The cache lives in `<cache_dir>/tokens/<key>/encoded.npz`, key = sha256 of (encoding version, records
fingerprint, tokenizer hash, max_len): other data, another tokenizer or another max_len is another entry,
never a stale one. Each entry is written to a temporary directory and renamed into place, so readers see a
complete entry or none.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerFast

from wmtp.data.collate import EncodedRecord, Truncation, encode_records_counted
from wmtp.data.records import Record, fingerprint

log = logging.getLogger(__name__)

# bump when encode_records changes what it produces (2: the decisive-token mask; 3: a pretrained tokenizer's own
# prefix convention, text_prefix, instead of its bos)
ENCODING_VERSION = 3


def encode_parallel(
    records: Sequence[Record], tokenizer: PreTrainedTokenizerFast, max_len: int, *, num_proc: int = 1
) -> tuple[list[EncodedRecord], Truncation]:
    """`encode_records_counted` over `num_proc` processes (contiguous chunks, order kept; identical output): the
    encoded records and the Truncation of all of them."""
    if num_proc <= 1 or len(records) < 2 * num_proc:
        return encode_records_counted(records, tokenizer, max_len)
    size = -(-len(records) // num_proc)
    chunks = [list(records[i : i + size]) for i in range(0, len(records), size)]
    # fork: workers inherit the imported modules and the tokenizer instead of importing torch again (spawn
    # costs seconds per worker); the tokenizers library turns its own threads off in a forked child.
    with ProcessPoolExecutor(max_workers=num_proc, mp_context=get_context("fork"),
                             initializer=_set_worker_tokenizer, initargs=(tokenizer,)) as pool:
        parts = list(pool.map(_encode_chunk, chunks, [max_len] * len(chunks)))
        return [e for part, _ in parts for e in part], sum((cut for _, cut in parts), Truncation())


_worker_tokenizer: PreTrainedTokenizerFast | None = None


def _set_worker_tokenizer(tokenizer: PreTrainedTokenizerFast) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer


def _encode_chunk(records: list[Record], max_len: int) -> tuple[list[EncodedRecord], Truncation]:
    return encode_records_counted(records, _worker_tokenizer, max_len)


def cache_key(records_fingerprint: str, tokenizer_hash: str, max_len: int) -> str:
    content = {"version": ENCODING_VERSION, "records": records_fingerprint, "tokenizer": tokenizer_hash,
               "max_len": max_len}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def encode_cached(
    records: Sequence[Record],
    tokenizer: PreTrainedTokenizerFast,
    max_len: int,
    *,
    tokenizer_hash: str,
    cache_dir: str | Path | None,
    num_proc: int = 1,
) -> tuple[list[EncodedRecord], Truncation | None]:
    """Encoded records from the cache when present, else encoded (in `num_proc` processes) and cached
    (`cache_dir=None` disables the cache); and their Truncation, stored in the cache entry (truncation.json) beside
    encoded.npz (None for an entry written before it was counted)."""
    if cache_dir is None:
        return encode_parallel(records, tokenizer, max_len, num_proc=num_proc)
    directory = Path(cache_dir) / "tokens" / cache_key(fingerprint(records), tokenizer_hash, max_len)
    if (directory / "encoded.npz").is_file():
        log.info("tokenised records from %s", directory)
        counts = directory / TRUNCATION_FILE
        cut = Truncation(**json.loads(counts.read_text())) if counts.is_file() else None
        return load_encoded(directory), cut
    encoded, cut = encode_parallel(records, tokenizer, max_len, num_proc=num_proc)
    save_encoded(directory, encoded, truncation=cut)
    return encoded, cut


TRUNCATION_FILE = "truncation.json"


def save_encoded(directory: Path, encoded: Sequence[EncodedRecord], *, truncation: Truncation | None = None) -> None:
    """Write encoded records (without ref_ce, record weights or packing) atomically into `directory` (and their
    Truncation)."""
    if any(e.ref_ce is not None or e.record_weights is not None or e.segments is not None for e in encoded):
        raise ValueError("only plain encoded records are cached (no ref_ce, no record weights, not packed)")
    lengths = np.array([len(e.input_ids) for e in encoded], dtype=np.int64)
    arrays = {
        "input_ids": np.array([t for e in encoded for t in e.input_ids], dtype=np.int64),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]),
        "n_prompt": np.array([e.n_prompt for e in encoded], dtype=np.int64),
        "is_correct": np.array([e.is_correct for e in encoded], dtype=bool),
        "ids": np.array(json.dumps([e.id for e in encoded])),
        # one mark per token (False for records without spans), and which records carry spans
        "decisive": np.array([d for e in encoded for d in (e.decisive or [False] * len(e.input_ids))], dtype=bool),
        "annotated": np.array([e.decisive is not None for e in encoded], dtype=bool),
    }
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    np.savez(tmp / "encoded.npz", **arrays)
    if truncation is not None:
        (tmp / TRUNCATION_FILE).write_text(json.dumps(dataclasses.asdict(truncation)))
    try:
        os.rename(tmp, directory)  # atomic; fails if another process got there first (same content)
    except OSError:
        shutil.rmtree(tmp)


def load_encoded(directory: Path) -> list[EncodedRecord]:
    with np.load(directory / "encoded.npz") as f:
        ids, offsets = f["input_ids"].tolist(), f["offsets"].tolist()
        n_prompt, is_correct = f["n_prompt"].tolist(), f["is_correct"].tolist()
        names = json.loads(str(f["ids"]))
        decisive, annotated = f["decisive"].tolist(), f["annotated"].tolist()
    return [
        EncodedRecord(names[i], ids[offsets[i] : offsets[i + 1]], n_prompt[i], is_correct[i],
                      decisive=decisive[offsets[i] : offsets[i + 1]] if annotated[i] else None)
        for i in range(len(names))
    ]
