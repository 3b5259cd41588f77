"""The reference CE of a run's records (DESIGN §7): written by `wmtp score-ref`, read back at training time, or
computed on the fly. Used by every weighting that declares `uses_reference` (its Config has `reference`,
`reference_revision`, `cache_dir`, `shard_records`, `score_batch_size` and `ref_on_the_fly`, as Rho-1's does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from wmtp.config import ConfigError, RunConfig
from wmtp.data.collate import EncodedRecord
from wmtp.data.dataset import PreparedData, encode_split, prepare_data
from wmtp.registry import method_classes, weightings
from wmtp.train.device import resolve_device
from wmtp.weighting.ref_cache import CacheKey, attach_ref_ce, cache_dir, encoded_fingerprint, read_cache, write_cache
from wmtp.weighting.reference import (
    ReferenceScorer,
    ReferenceSource,
    check_reference_tokenizer,
    load_reference_model,
    reference_identity,
    reference_tokenizer,
    resolve_reference,
)


def reference_settings(cfg: RunConfig) -> tuple[str, BaseModel]:
    """(section name, its Config) of the reference the run reads: its weighting's when that one declares
    `uses_reference`, else the one such section that names a reference (`wmtp score-ref weighting.rho1.reference=…`
    scores it whatever weighting.name is)."""
    readers = [c.name for c in method_classes(cfg.weighting) if c.uses_reference]  # a hybrid's: its rho1
    if readers:
        return readers[0], cfg.weighting.section(readers[0])
    named = [name for name, c in weightings().items() if c.uses_reference and cfg.weighting.section(name).reference]
    if len(named) != 1:
        readers = [name for name, c in weightings().items() if c.uses_reference]
        raise ConfigError(f"weighting.name={cfg.weighting.name} reads no reference model, and {len(named)} of the "
                          f"sections that can name one ({', '.join(readers)}) do: set weighting.<name>.reference "
                          "of the one to score (e.g. weighting.rho1.reference=DIR), or weighting.name to it")
    return named[0], cfg.weighting.section(named[0])


def reference_source(cfg: RunConfig, data: PreparedData) -> ReferenceSource:
    """Resolve weighting.<section>.reference and refuse a reference whose tokenizer is not the policy's."""
    section, rcfg = reference_settings(cfg)
    if rcfg.reference is None:
        raise ConfigError(
            f"weighting.name={cfg.weighting.name} needs a reference model: set weighting.{section}.reference to a "
            "wmtp run/model directory or an HF causal LM"
        )
    source = resolve_reference(rcfg.reference, revision=rcfg.reference_revision)
    check_reference_tokenizer(data.tokenizer, reference_tokenizer(source), where=rcfg.reference)
    return source


def reference_cache_key(
    cfg: RunConfig, data: PreparedData, records: list[EncodedRecord], source: ReferenceSource
) -> tuple[Path, CacheKey]:
    """(cache directory, CacheKey) of the reference CEs of `records` (train + valid, in that order)."""
    key = CacheKey(encoded_fingerprint(records), data.tokenizer_hash, reference_identity(source))
    root = reference_settings(cfg)[1].cache_dir or Path(cfg.data.cache_dir) / "ref"
    return cache_dir(root, key), key


def score_reference(cfg: RunConfig) -> tuple[Path, dict[str, list[int]]]:
    """`wmtp score-ref`: write (or complete) the reference-CE cache of cfg's train + valid records."""
    data = prepare_data(cfg.data)
    records = encode_split(cfg.data, data, data.train)[0] + encode_split(cfg.data, data, data.valid)[0]
    source = reference_source(cfg, data)
    directory, key = reference_cache_key(cfg, data, records, source)
    rcfg = reference_settings(cfg)[1]
    scorer = ReferenceScorer(
        load_reference_model(source, device=resolve_device(cfg.train.device)), chunk_tokens=cfg.train.ce_chunk_tokens
    )
    done = write_cache(
        records,
        scorer,
        directory=directory,
        key=key,
        pad_id=data.tokenizer.pad_token_id,
        shard_records=rcfg.shard_records,
        batch_size=rcfg.score_batch_size,
        reference_spec=rcfg.reference,
        progress=cfg.train.progress,
    )
    return directory, done


def with_reference(
    cfg: RunConfig, data: PreparedData, train: list[EncodedRecord], valid: list[EncodedRecord], device: torch.device
) -> tuple[list[EncodedRecord], list[EncodedRecord], ReferenceScorer | None, dict[str, Any]]:
    """Records carrying ref_ce from the cache (a missing or stale cache is an error), or, with `ref_on_the_fly`,
    the records as they are and a scorer that computes ref_ce per batch; and the reference's provenance."""
    rcfg = reference_settings(cfg)[1]
    source = reference_source(cfg, data)
    meta: dict[str, Any] = {"spec": rcfg.reference, "identity": reference_identity(source)}
    if rcfg.ref_on_the_fly:
        model = load_reference_model(source, device=device)
        return train, valid, ReferenceScorer(model, chunk_tokens=cfg.train.ce_chunk_tokens), meta
    directory, key = reference_cache_key(cfg, data, train + valid, source)
    values = read_cache(directory, key, train + valid)
    meta["cache"] = {"dir": str(directory), "key": key.digest}
    return attach_ref_ce(train, values[: len(train)]), attach_ref_ce(valid, values[len(train) :]), None, meta
