"""`wmtp data stats`: what a dataset holds, split by split, as a run would tokenise it.

Per split: records, problems, correct ratio, counts per difficulty and per source (with their correct
ratio), and token lengths of [bos] + prompt + completion + [eos] (untruncated, with the fraction longer than
`max_len`). Written as `stats.json` and a histogram of token lengths, `token_lengths.png`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wmtp.config import DataConfig
from wmtp.data.dataset import load_splits
from wmtp.data.records import Record
from wmtp.data.token_cache import encode_parallel
from wmtp.data.tokenizer import tokenizer_hash

UNTRUNCATED = 1 << 30  # a max_len no record reaches


def _by(records: Sequence[Record], key: str) -> dict[str, dict[str, Any]]:
    total, correct = Counter(), Counter()
    for r in records:
        value = str(getattr(r, key))  # None (no difficulty) → "None"
        total[value] += 1
        correct[value] += r.is_correct
    return {v: {"records": total[v], "correct_ratio": correct[v] / total[v]} for v in sorted(total)}


def length_summary(lengths: np.ndarray, max_len: int) -> dict[str, float]:
    if len(lengths) == 0:
        return {}
    return {
        "mean": float(lengths.mean()),
        "median": float(np.median(lengths)),
        "p90": float(np.percentile(lengths, 90)),
        "p99": float(np.percentile(lengths, 99)),
        "max": int(lengths.max()),
        "over_max_len": float((lengths > max_len).mean()),
    }


def split_stats(records: Sequence[Record], lengths: np.ndarray, max_len: int) -> dict[str, Any]:
    """Counts and length summary of one split; `lengths[i]` is record i's token count."""
    n = len(records)
    return {
        "records": n,
        "problems": len({r.problem_id for r in records}),
        "correct": sum(r.is_correct for r in records),
        "correct_ratio": sum(r.is_correct for r in records) / n if n else None,
        "by_difficulty": _by(records, "difficulty"),
        "by_source": _by(records, "source"),
        "tokens": length_summary(lengths, max_len),
    }


def plot_lengths(lengths: dict[str, np.ndarray], max_len: int, path: Path, *, bins: int = 50) -> None:
    """One histogram of token lengths per split (shared bins), the max_len cut as a dashed line."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    everything = np.concatenate([v for v in lengths.values() if len(v)] or [np.zeros(1)])
    edges = np.histogram_bin_edges(everything, bins=bins)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for name, values in lengths.items():
        if len(values):
            ax.hist(values, bins=edges, alpha=0.5, label=f"{name} ({len(values)})")
    ax.axvline(max_len, color="black", linestyle="--", label=f"max_len={max_len}")
    ax.set_xlabel("tokens per record ([bos] + prompt + completion + [eos])")
    ax.set_ylabel("records")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def data_stats(cfg: DataConfig, out_dir: str | Path | None = None) -> tuple[dict[str, Any], Path]:
    """Statistics of every split of cfg's data (unfiltered: train_on does not apply), written to
    `out_dir` (default `<data dir>/stats`) as stats.json and token_lengths.png. Returns (stats, out_dir)."""
    data_dir, splits, tokenizer = load_splits(cfg)
    out = Path(out_dir) if out_dir is not None else data_dir / "stats"
    lengths = {
        name: np.array([len(e.input_ids) for e in encode_parallel(records, tokenizer, UNTRUNCATED,
                                                                   num_proc=cfg.num_proc)[0]], dtype=np.int64)
        for name, records in splits.items()
    }
    stats = {
        "data_dir": str(data_dir),
        "tokenizer_hash": tokenizer_hash(tokenizer),
        "max_len": cfg.max_len,
        "splits": {name: split_stats(records, lengths[name], cfg.max_len)
                   for name, records in splits.items() if records},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    plot_lengths({name: v for name, v in lengths.items() if len(v)}, cfg.max_len, out / "token_lengths.png")
    return stats, out
