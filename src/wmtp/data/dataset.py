"""From a `DataConfig` to records and a tokenizer, generating and caching what is missing.

Layout of the cache (`cfg.cache_dir`):
    synthetic-<key>/{train,valid,test}.jsonl     the embedded task (key: generator version + synthetic cfg)
    synthetic-<key>/tokenizer-v<vocab_size>/     BPE trained on that train split
    tokenizer-<train fingerprint>-v<vocab_size>/ BPE trained on a user dataset that has none
Generation and tokenizer training are the slow steps, so both are reused when present. Every file is written
atomically, so a run killed midway, or two runs preparing the same data at once, leave no torn files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerFast

from wmtp.config import DataConfig, SyntheticDataConfig
from wmtp.data.collate import EncodedRecord, Truncation
from wmtp.data.records import DataError, Record, fingerprint, read_records, write_records
from wmtp.data.synthetic import GENERATOR_VERSION, generate_splits
from wmtp.data.token_cache import encode_cached
from wmtp.data.tokenizer import load_tokenizer, save_tokenizer, tokenizer_hash, train_tokenizer

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


@dataclass
class PreparedData:
    """Records ready for training. `train` is filtered by `cfg.train_on`, `valid` holds every validation record;
    `fingerprint` covers both."""

    train: list[Record]
    valid: list[Record]
    test: list[Record]
    tokenizer: PreTrainedTokenizerFast
    data_dir: Path
    fingerprint: str
    tokenizer_hash: str


def synthetic_key(cfg: SyntheticDataConfig) -> str:
    """sha256 (16 hex) of the synthetic config and the generator version: the name of its cache directory."""
    content = {"generator_version": GENERATOR_VERSION, **cfg.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _synthetic_splits(cfg: SyntheticDataConfig, data_dir: Path) -> dict[str, list[Record]]:
    if all((data_dir / f"{name}.jsonl").is_file() for name in SPLITS):
        return {name: read_records(data_dir / f"{name}.jsonl") for name in SPLITS}
    start = time.perf_counter()
    splits = generate_splits(cfg)
    for name in SPLITS:
        write_records(data_dir / f"{name}.jsonl", splits[name])
    log.info("generated synthetic data into %s in %.1f s", data_dir, time.perf_counter() - start)
    return splits


def _user_splits(data_dir: Path) -> dict[str, list[Record]]:
    """train.jsonl and valid.jsonl are required; test.jsonl is optional."""
    if not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} does not exist")
    test = data_dir / "test.jsonl"
    return {
        "train": read_records(data_dir / "train.jsonl"),
        "valid": read_records(data_dir / "valid.jsonl"),
        "test": read_records(test) if test.is_file() else [],
    }


def _cached_tokenizer(directory: Path, train: list[Record], vocab_size: int) -> PreTrainedTokenizerFast:
    """Load the tokenizer in `directory`, or train one on the train texts and save it there."""
    if (directory / "tokenizer.json").is_file():
        return load_tokenizer(directory)
    tok = train_tokenizer((r.prompt + r.completion for r in train), vocab_size)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    save_tokenizer(tok, tmp)
    try:
        os.rename(tmp, directory)  # atomic; fails if another run got there first, whose result is identical
    except OSError:
        shutil.rmtree(tmp)
    log.info("trained a %d-token tokenizer into %s", vocab_size, directory)
    return tok


def load_splits(cfg: DataConfig) -> tuple[Path, dict[str, list[Record]], PreTrainedTokenizerFast]:
    """(data directory, every record of each split unfiltered, tokenizer): what `prepare_data` starts from."""
    cache = Path(cfg.cache_dir)
    if cfg.path is None:
        data_dir = cache / f"synthetic-{synthetic_key(cfg.synthetic)}"
        splits = _synthetic_splits(cfg.synthetic, data_dir)
        tok_dir = data_dir / f"tokenizer-v{cfg.vocab_size}"
    else:
        data_dir = Path(cfg.path)
        splits = _user_splits(data_dir)
        tok_dir = data_dir / "tokenizer"
        if not tok_dir.is_dir():
            tok_dir = cache / f"tokenizer-{fingerprint(splits['train'])}-v{cfg.vocab_size}"
    # The tokenizer sees every train record, whatever `train_on` says, so both settings share it.
    if cfg.tokenizer is not None:
        tokenizer = load_tokenizer(cfg.tokenizer)
    else:
        tokenizer = _cached_tokenizer(tok_dir, splits["train"], cfg.vocab_size)
    return data_dir, splits, tokenizer


def prepare_data(cfg: DataConfig) -> PreparedData:
    """Records (generated or read) and a tokenizer (given, saved with the data, or trained and cached)."""
    data_dir, splits, tokenizer = load_splits(cfg)
    train, valid = splits["train"], splits["valid"]
    if cfg.train_on == "correct":
        # valid keeps every record: validation CE is taken on its correct records whatever train_on says, and the
        # weightings' validation metrics (localisation on incorrect records, the critic's AUC) need the others.
        train = [r for r in train if r.is_correct]
    for name, records in (("train", train), ("valid", valid)):
        if not records:
            raise DataError(f"no {name} records in {data_dir} (train_on={cfg.train_on!r})")
    return PreparedData(
        train=train,
        valid=valid,
        test=splits["test"],
        tokenizer=tokenizer,
        data_dir=data_dir,
        fingerprint=fingerprint(train + valid),
        tokenizer_hash=tokenizer_hash(tokenizer),
    )


def encode_split(
    cfg: DataConfig, data: PreparedData, records: list[Record]
) -> tuple[list[EncodedRecord], Truncation | None]:
    """Tokenise one split (in cfg.num_proc processes; through the token cache when cfg.token_cache): the encoded
    records and what cfg.max_len cut from them (None: a token cache entry that predates counting)."""
    encoded, cut = encode_cached(
        records, data.tokenizer, cfg.max_len, tokenizer_hash=data.tokenizer_hash, num_proc=cfg.num_proc,
        cache_dir=cfg.cache_dir if cfg.token_cache else None,
    )
    if records and not encoded:
        raise DataError(f"none of the {len(records)} records of {data.data_dir} keeps a completion token within "
                        f"data.max_len={cfg.max_len}; raise data.max_len")
    return encoded, cut
