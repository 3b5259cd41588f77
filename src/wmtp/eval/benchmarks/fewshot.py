"""The data of a benchmark prompted with solved examples (GSM8K, MATH): its test rows and its few-shot rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wmtp.eval.benchmarks.rows import hub_rows, read_rows, rows_from

Rows = list[dict[str, Any]]


def test_and_fewshot_rows(
    benchmark: str,
    data_file: str | Path | None,
    *,
    dataset: str | None,
    split: str | None,
    n_shot: int,
    fewshot_file: str | Path | None,
    hub_fewshot_split: str | None = None,
) -> tuple[Rows, Rows | None]:
    """The test rows (exactly one of ``data_file`` or the hub ``dataset``, split ``split`` or ``test``) and the
    few-shot rows: none ([]) when ``n_shot <= 0``, else ``fewshot_file``'s rows, else (given a hub dataset and
    ``hub_fewshot_split``) that split of the dataset, else None: the benchmark's own examples or its error."""
    rows = rows_from(data_file=data_file, dataset=dataset, split=split or "test", benchmark=benchmark)
    if n_shot <= 0:
        return rows, []
    if fewshot_file is not None:
        return rows, read_rows(fewshot_file)
    if dataset is not None and hub_fewshot_split is not None:
        return rows, hub_rows(dataset, split=hub_fewshot_split)
    return rows, None
