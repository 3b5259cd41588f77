"""The reference-CE cache written by `wmtp score-ref` and read by rho1 training: sharded, resumable, keyed.

Key = sha256 (16 hex) of its three components, each of which invalidates the cache when it changes:
    data       fingerprint of the encoded records (record ids and token ids: covers the records, train_on,
               max_len and the tokenization)
    tokenizer  hash of the policy tokenizer (`wmtp.data.tokenizer.tokenizer_hash`)
    reference  the reference model's identity (`wmtp.weighting.reference.reference_identity`)

Layout: <root>/ref-<key>/
    shard_00000.safetensors …   `ref_ce` Float[Σ lengths] and `lengths` Long[n] for `shard_records` records
                                in order; metadata: the key and the records' ids
    index.json                  the key and its components, the shards with their sha256; written last
A shard is written to a temporary file and renamed, so it is either whole or absent. Scoring again skips
every shard that is present and matches; only missing (or foreign, or unreadable) shards are computed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.progress import Progress
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from wmtp.data.collate import EncodedRecord, collate
from wmtp.data.records import DataError
from wmtp.train.state import sha256_file

CACHE_FORMAT = 1
INDEX = "index.json"
SCORE_COMMAND = "`wmtp score-ref` (same --config and overrides as this run)"


class RefCacheError(DataError):
    """A missing, stale or corrupt reference cache; the message names the expected key and how to make it."""


@dataclass(frozen=True)
class CacheKey:
    data: str
    tokenizer: str
    reference: str

    def components(self) -> dict[str, str]:
        return {"data": self.data, "tokenizer": self.tokenizer, "reference": self.reference}

    @property
    def digest(self) -> str:
        content = {"format": CACHE_FORMAT, **self.components()}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        return f"{self.digest} (data {self.data}, tokenizer {self.tokenizer}, reference {self.reference})"


def encoded_fingerprint(records: Sequence[EncodedRecord]) -> str:
    """sha256 (16 hex) of the records' ids and token ids, in order."""
    digest = hashlib.sha256()
    for r in records:
        digest.update(json.dumps([r.id, r.input_ids], separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def cache_dir(root: str | Path, key: CacheKey) -> Path:
    return Path(root) / f"ref-{key.digest}"


def _shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


def _read_shard(path: Path) -> tuple[dict[str, str], torch.Tensor, torch.Tensor]:
    """(metadata, ref_ce Float[Σn], lengths Long[n]); raises RefCacheError on an unreadable file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}, f.get_tensor("ref_ce"), f.get_tensor("lengths")
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as err:
        raise RefCacheError(f"unreadable reference-cache shard {path}: {err}") from None


def _shard_matches(path: Path, key: CacheKey, shard: Sequence[EncodedRecord], sha256: str | None) -> bool:
    """A shard can be reused: whole, for this key and these records, and (when an earlier index lists it)
    bit-identical to what that index recorded."""
    if not path.is_file() or (sha256 is not None and sha256_file(path) != sha256):
        return False
    try:
        meta, values, lengths = _read_shard(path)
    except RefCacheError:
        return False
    return (
        meta.get("key") == key.digest
        and json.loads(meta.get("ids", "[]")) == [r.id for r in shard]
        and lengths.tolist() == [len(r.input_ids) for r in shard]
        and values.numel() == sum(len(r.input_ids) for r in shard)
    )


def _write_shard(path: Path, key: CacheKey, shard: Sequence[EncodedRecord], values: list[torch.Tensor]) -> None:
    tensors = {
        "ref_ce": torch.cat(values).float().contiguous(),
        "lengths": torch.tensor([len(r.input_ids) for r in shard], dtype=torch.long),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"key": key.digest, "ids": json.dumps([r.id for r in shard])})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _indexed_hashes(directory: Path, key: CacheKey) -> dict[str, str]:
    """file → sha256 from an earlier index of the same key (empty when there is none)."""
    try:
        index = json.loads((directory / INDEX).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    if index.get("key") != key.digest:
        return {}
    return {s["file"]: s["sha256"] for s in index.get("shards", [])}


def write_cache(
    records: Sequence[EncodedRecord],
    scorer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    directory: Path,
    key: CacheKey,
    pad_id: int,
    shard_records: int,
    batch_size: int,
    reference_spec: str = "",
    progress: bool = False,
) -> dict[str, list[int]]:
    """Score every record (ref_ce of each token) into `directory`, skipping shards already there.

    scorer: (input_ids Long[B,T], attention_mask Bool[B,T]) → ref_ce Float[B,T]. Returns
    {"computed": [shard indices scored now], "skipped": [shard indices reused]}.
    """
    directory.mkdir(parents=True, exist_ok=True)
    shards = [records[s : s + shard_records] for s in range(0, len(records), shard_records)]
    known = _indexed_hashes(directory, key)
    done: dict[str, list[int]] = {"computed": [], "skipped": []}
    with Progress(disable=not progress) as bar:
        task = bar.add_task("score-ref", total=len(records))
        for i, shard in enumerate(shards):
            path = directory / _shard_name(i)
            if _shard_matches(path, key, shard, known.get(path.name)):
                done["skipped"].append(i)
            else:
                values = []
                for s in range(0, len(shard), batch_size):
                    part = [replace(r, ref_ce=None) for r in shard[s : s + batch_size]]
                    batch = collate(part, pad_id=pad_id)  # right padding: ref_ce[b, :n] is record b's
                    ref = scorer(batch["input_ids"], batch["attention_mask"]).float().cpu()
                    values += [ref[b, : len(r.input_ids)] for b, r in enumerate(part)]
                _write_shard(path, key, shard, values)
                done["computed"].append(i)
            bar.advance(task, len(shard))
    index = {
        "format": CACHE_FORMAT,
        "key": key.digest,
        "components": key.components(),
        "reference_spec": reference_spec,
        "n_records": len(records),
        "shard_records": shard_records,
        "shards": [
            {"file": _shard_name(i), "n_records": len(shard), "sha256": sha256_file(directory / _shard_name(i))}
            for i, shard in enumerate(shards)
        ],
    }
    tmp = directory / f".{INDEX}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, directory / INDEX)
    return done


def _stale_hint(root: Path, key: CacheKey) -> str:
    """Name caches under `root` made for other keys, and which component differs."""
    hints = []
    for index_path in sorted(root.glob(f"ref-*/{INDEX}"))[:20]:
        try:
            other = json.loads(index_path.read_text()).get("components", {})
        except (OSError, json.JSONDecodeError):
            continue
        differs = [name for name, value in key.components().items() if other.get(name) != value]
        if differs:
            hints.append(f"{index_path.parent.name} (differs in {', '.join(differs)})")
    return f"; stale caches under {root}: {'; '.join(hints)}" if hints else ""


def read_cache(directory: Path, key: CacheKey, records: Sequence[EncodedRecord]) -> list[list[float]]:
    """ref_ce of every record (same order), checked against the key, the shard hashes, ids and lengths."""
    index_path = directory / INDEX
    remedy = f"make it with {SCORE_COMMAND} or set weighting.rho1.ref_on_the_fly=true"
    if not index_path.is_file():
        partial = " (incomplete: scoring did not finish)" if directory.is_dir() else ""
        raise RefCacheError(
            f"no reference-CE cache for key {key.describe()} at {directory}{partial}; {remedy}"
            + _stale_hint(directory.parent, key)
        )
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as err:
        raise RefCacheError(f"corrupt {index_path}: {err}; {remedy}") from None
    if index.get("key") != key.digest or index.get("components") != key.components():
        raise RefCacheError(
            f"stale reference-CE cache {directory}: made for {index.get('key')} ({index.get('components')}), "
            f"expected key {key.describe()}; {remedy}"
        )
    if index.get("n_records") != len(records):
        raise RefCacheError(
            f"reference cache {directory} holds {index.get('n_records')} records, expected {len(records)}; {remedy}"
        )
    out: list[list[float]] = []
    start = 0
    for entry in index["shards"]:
        path = directory / entry["file"]
        if not path.is_file() or sha256_file(path) != entry["sha256"]:
            raise RefCacheError(f"reference-cache shard {path} is missing or corrupt; {remedy}")
        meta, values, lengths = _read_shard(path)
        shard = records[start : start + entry["n_records"]]
        start += entry["n_records"]
        same_ids = json.loads(meta.get("ids", "[]")) == [r.id for r in shard]
        if not same_ids or lengths.tolist() != [len(r.input_ids) for r in shard]:
            raise RefCacheError(f"reference-cache shard {path} does not match the records; {remedy}")
        out += [v.tolist() for v in values.split(lengths.tolist())]
    return out


def attach_ref_ce(records: Sequence[EncodedRecord], values: Sequence[Sequence[float]]) -> list[EncodedRecord]:
    """Copies of the records carrying their ref_ce (one value per token)."""
    if len(records) != len(values):
        raise ValueError(f"{len(values)} ref_ce rows for {len(records)} records")
    return [replace(r, ref_ce=list(v)) for r, v in zip(records, values)]
