"""Rows of a benchmark's data: a local file (jsonl, jsonl.gz, json, parquet) or a Hugging Face hub dataset."""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wmtp.data.records import DataError


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a local data file: ``.jsonl`` / ``.jsonl.gz`` (one object a line), ``.json`` (an array of
    objects), or ``.parquet`` (needs pyarrow).

    Raises:
        DataError: the file is missing, unreadable, or not a list of objects; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            rows = _parquet_rows(path)
        elif name.endswith(".json"):
            rows = json.loads(path.read_text(encoding="utf-8"))
        elif name.endswith((".jsonl", ".jsonl.gz")):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]
        else:
            raise DataError(f"data file {path}: unknown format (expected .jsonl, .jsonl.gz, .json or .parquet)")
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise DataError(f"data file {path} is not readable as {path.suffix}: {err}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"data file {path} does not hold a list of JSON objects")
    return rows


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"reading {path} needs pyarrow: `pip install pyarrow` (or wmtp's `hf` extra, which brings it)"
        ) from None
    return pq.read_table(path).to_pylist()


def hub_rows(name: str, *, split: str | None) -> list[dict[str, Any]]:
    """Rows of a Hugging Face hub dataset ``NAME`` or ``NAME:CONFIG`` (the user's request to download).

    ``split=None`` concatenates every split (MBPP's few-shot tasks live in its ``prompt`` split).
    """
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"--dataset {name} needs the Hugging Face `datasets` package: `pip install datasets` "
            "(or `pip install -e '.[hf]'`); or pass a local --data-file"
        ) from None
    repo, _, config = name.partition(":")
    try:
        loaded = datasets.load_dataset(repo, config or None, split=split)
    except Exception as err:  # the hub raises many types (connection, missing config, missing split)
        raise DataError(f"could not load dataset {name!r} (split {split!r}): {err}") from err
    parts = list(loaded.values()) if isinstance(loaded, Mapping) else [loaded]
    return [dict(row) for part in parts for row in part]


def rows_from(
    *, data_file: str | Path | None, dataset: str | None, split: str | None, benchmark: str
) -> list[dict[str, Any]]:
    """Rows from exactly one of a local file or a hub dataset."""
    if (data_file is None) == (dataset is None):
        raise DataError(f"{benchmark} needs exactly one of a data file (--data-file) or a hub dataset (--dataset)")
    return read_rows(data_file) if data_file is not None else hub_rows(dataset, split=split)


def require_keys(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], *, benchmark: str) -> None:
    """Raise DataError naming the first row that lacks one of ``keys``."""
    for i, row in enumerate(rows):
        missing = [k for k in keys if k not in row]
        if missing:
            raise DataError(f"{benchmark}: row {i} lacks {missing} (has {sorted(row)})")
