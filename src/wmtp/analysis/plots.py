"""PNG figures of a comparison (matplotlib, Agg backend): one function per figure, each returns its path.

Curves are the mean over seeds at each logged step with a band from the minimum to the maximum seed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen before pyplot is imported)
import numpy as np  # noqa: E402

from wmtp.analysis.runs import RunData, Variant  # noqa: E402


def _curves(variants: list[Variant], kind: str, key: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, steps S, values Float[seeds, S]) per variant, over the steps every seed logged."""
    out = []
    for v in variants:
        series = [{r["step"]: r[key] for r in run.kind(kind) if r.get(key) is not None} for run in v.runs]
        steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
        if steps:
            out.append((v.label, np.array(steps), np.array([[s[t] for t in steps] for s in series])))
    return out


def _band_plot(ax, curves: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    for label, steps, values in curves:
        mean = values.mean(axis=0)
        (line,) = ax.plot(steps, mean, label=f"{label} (n={len(values)})")
        ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_curves(variants: list[Variant], path: Path) -> Path:
    """Validation loss and training loss against step, seed bands."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, kind, key, title in ((axes[0], "eval", "val_loss", "validation loss (mean CE over heads)"),
                                 (axes[1], "train", "loss", "training loss (weighted)")):
        _band_plot(ax, _curves(variants, kind, key))
        ax.set(title=title, xlabel="step", ylabel="nats")
        ax.legend(fontsize=7)
    return _save(fig, path)


def metric_over_time(variants: list[Variant], key: str, path: Path, *, title: str, kind: str = "train") -> Path | None:
    """One logged column against step (e.g. w_entropy, val_drift); None when no run logged it."""
    curves = _curves(variants, kind, key)
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    _band_plot(ax, curves)
    ax.set(title=title, xlabel="step", ylabel=key)
    ax.legend(fontsize=7)
    return _save(fig, path)


def aggregated_histograms(run: RunData) -> tuple[list[float], dict[int, np.ndarray]] | None:
    """(edges, {head k: counts summed over every weights_hist row}) of one run, or None."""
    rows = run.kind("weights_hist")
    if not rows:
        return None
    counts = {k: np.sum([r[f"counts_h{k}"] for r in rows], axis=0) for k in range(1, run.n_heads + 1)
              if f"counts_h{k}" in rows[0]}
    return rows[0]["edges"], counts


def weight_histograms(variants: list[Variant], path: Path) -> Path | None:
    """Distribution of the normalised weights per variant (one panel) and head (one line), all seeds pooled."""
    panels = []
    for v in variants:
        hists = [h for h in map(aggregated_histograms, v.runs) if h is not None]
        if hists:
            edges = hists[0][0]
            heads = {k: sum(h[1][k] for h in hists) for k in hists[0][1]}
            panels.append((v.label, np.array(edges), heads))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (label, edges, heads) in zip(axes[0], panels):
        centers = (edges[:-1] + edges[1:]) / 2
        for k, counts in heads.items():
            ax.plot(centers, counts / max(counts.sum(), 1), marker=".", label=f"head {k}")
        ax.set(title=label, xlabel=f"weight (normalised, mean 1; last bin ≥ {edges[-2]:g})", ylabel="fraction of entries")
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def bars_per_head(
    variants: list[Variant], path: Path, *, value: Callable[[RunData, int], float | None], title: str, ylabel: str
) -> Path | None:
    """Grouped bars: head k on the x axis, one bar per variant (mean over seeds, error bar min–max)."""
    H = max(r.n_heads for v in variants for r in v.runs)
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * H * len(variants) / 2), 4))
    drawn = False
    for i, v in enumerate(variants):
        xs, means, lo, hi = [], [], [], []
        for k in range(1, H + 1):
            vals = [x for x in (value(r, k) for r in v.runs) if x is not None]
            if vals:
                xs.append(k + (i - (len(variants) - 1) / 2) * width)
                means.append(np.mean(vals))
                lo.append(np.mean(vals) - min(vals))
                hi.append(max(vals) - np.mean(vals))
        if xs:
            ax.bar(xs, means, width=width, yerr=[lo, hi], capsize=3, label=v.label)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set(title=title, xlabel="head k (predicts token t+o_k; o_k = k unless model.head_offsets)", ylabel=ylabel, xticks=range(1, H + 1))
    ax.legend(fontsize=7)
    return _save(fig, path)


def error_by_difficulty(variants: list[Variant], path: Path, *, head: int = 1) -> Path | None:
    """Error rate of `head` per reference-CE bin of the target token, one line per variant (mean over seeds)."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    labels = None
    for v in variants:
        rows = [r.heads["difficulty"] for r in v.runs if r.heads and "difficulty" in r.heads]
        if not rows:
            continue
        labels = rows[0]["labels"]
        per_bin = [[d[f"error_h{head}"][i] for d in rows if d[f"error_h{head}"][i] is not None]
                   for i in range(len(labels))]  # an empty bin (no token that hard or easy) is a gap
        ax.plot(range(len(labels)), [np.mean(x) if x else np.nan for x in per_bin], marker="o", label=v.label)
    if labels is None:
        plt.close(fig)
        return None
    ax.set(title=f"head {head} error by token difficulty", xlabel="reference CE of the target token (nats)",
           ylabel="top-1 error rate", xticks=range(len(labels)))
    ax.set_xticklabels(labels)
    ax.legend(fontsize=7)
    return _save(fig, path)
