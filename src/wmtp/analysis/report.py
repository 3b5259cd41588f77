"""`wmtp report RUNS…`: compare run directories (variants × seeds) → report.md, report.html, report.json, PNGs.

Reads only run directories: config.yaml, meta.json, metrics.jsonl, eval/<bench>.json, analysis/heads.json and
model/wmtp_model.json. Each metric is shown as its mean over seeds with a 95% percentile-bootstrap interval,
and tested by a paired two-sided Wilcoxon signed-rank test (pairs: the same seed; for pass@k also the same
problem) against each of the variant's comparisons (wmtp.analysis.runs.Variant.comparisons): uniform, uniform on
the same data, its shuffled / random controls. Every test shows its smallest attainable p and its minimum
detectable effect (MDE; wmtp.analysis.stats). A critic run whose stage-1 validation AUC has a CI reaching 0.5
puts a warning at the top (critic_signal).

The tables of tests are `wmtp.analysis.comparisons`'s; this module writes the document and its other
sections (efficiency, stability, localisation, critic, weight and difficulty analyses, figures).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from wmtp.analysis import plots
from wmtp.analysis.comparisons import Metrics, comparisons_section, results_section
from wmtp.analysis.document import Document
from wmtp.analysis.formatting import fmt, fmt_ci
from wmtp.analysis.metrics import run_metrics, target_val_loss
from wmtp.analysis.runs import RunData, Variant, find_runs, group_variants, load_run
from wmtp.analysis.stats import bootstrap_ci
from wmtp.eval.passk import pass_at_k


def write_report(
    paths: list[str | Path], out_dir: str | Path, *, target_loss: float | None = None, title: str = "wmtp report",
    preface: str | None = None,
) -> Path:
    """Report the runs under `paths` into out_dir (report.md, report.html, report.json, figures/); returns
    the path of report.md. `preface`: a paragraph placed first (e.g. how the runs were made)."""
    out_dir = Path(out_dir)
    runs = [load_run(p) for p in find_runs(paths)]
    variants = group_variants(runs)
    target = target_loss if target_loss is not None else target_val_loss(runs)
    metrics: Metrics = {id(r): run_metrics(r, target_loss=target) for r in runs}
    doc = Document(title)
    no_signal = critic_signal(runs)
    if no_signal:
        doc.paragraph(_no_signal_warning(no_signal))
    if preface:
        doc.paragraph(preface)
    data: dict[str, Any] = {
        "target_val_loss": target,
        "critic_no_signal": no_signal,
        "variants": [{"label": v.label, "method": v.method, "seeds": v.seeds,
                      "baseline": v.baseline.label if v.baseline else None,
                      "data_baseline": v.data_baseline.label if v.data_baseline else None,
                      "controls": [c.label for c in v.controls],
                      "runs": [str(r.path) for r in v.runs]} for v in variants],
    }
    doc.paragraph(_overview(variants))
    data["results"] = results_section(doc, variants, metrics)
    data["comparisons"] = comparisons_section(doc, variants, metrics, data["results"])
    data["efficiency"] = _efficiency_section(doc, variants, metrics, target)
    data["stability"] = _stability_section(doc, variants, metrics)
    data["localisation"] = _localisation_section(doc, variants, metrics)
    data["critic"] = _critic_section(doc, variants, metrics)
    _analysis_section(doc, variants, data)
    _figures_section(doc, variants, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(doc.markdown())
    (out_dir / "report.html").write_text(doc.html())
    (out_dir / "report.json").write_text(json.dumps(data, indent=1, default=_json_default))
    return out_dir / "report.md"


def _json_default(value: Any) -> Any:
    return float(value) if isinstance(value, np.floating) else str(value)


def _overview(variants: list[Variant]) -> str:
    lines = [f"`{v.label}`: seeds {', '.join(map(str, sorted(v.seeds)))}" for v in variants]
    return (f"{sum(len(v.runs) for v in variants)} runs in {len(variants)} variants — " + "; ".join(lines)
            + ". Intervals: 95% percentile bootstrap of the mean over seeds (9999 resamples; none with one seed). "
            "Tests: two-sided Wilcoxon signed-rank against the uniform variant with the same other settings, "
            "paired by seed (and by problem for pass@k); zero differences are dropped, `n` counts pairs and "
            "(in brackets) non-zero differences. `shuffled:X` is X's weights permuted among the batch's valid "
            "entries (X's control); `@all` marks training on correct and incorrect records.")


# ---- the critic's signal ---------------------------------------------------------------------------------


def critic_signal(runs: list[RunData]) -> list[dict[str, Any]]:
    """Runs whose critic learned no signal: the last `critic_eval` row (the end of stage 1) has `signal` false or
    `val_auc_ci_low` ≤ 0.5. Runs without those fields (no critic, or older runs) are not listed."""
    out = []
    for run in runs:
        evals = run.kind("critic_eval")
        if not evals:
            continue
        last = evals[-1]
        low = last.get("val_auc_ci_low")
        if last.get("signal") is False or (low is not None and low <= 0.5):
            out.append({"run": str(run.path), "variant": run.method_spec, "seed": run.seed, "step": last.get("step"),
                        "auc": last.get("val_auc_last"), "ci_low": low, "ci_high": last.get("val_auc_ci_high")})
    return out


def _no_signal_warning(found: list[dict[str, Any]]) -> str:
    listed = "; ".join(f"`{f['run']}` ({f['variant']}, seed {f['seed']}): AUC {fmt(f['auc'], 3)}, 95% CI "
                       f"{fmt_ci(f['ci_low'], f['ci_high'], 3)}" for f in found)
    return ("**WARNING: the critic learned no signal: its weights are noise.** At the end of stage 1 the "
            "validation AUC of V before the last token (correct vs incorrect) has a 95% bootstrap CI reaching 0.5 "
            f"in {len(found)} run(s): {listed}. Comparisons of these runs test noise weights, not the critic.")


# ---- efficiency and stability ----------------------------------------------------------------------------


def _values(v: Variant, metrics: Metrics, key: str) -> list[float]:
    return [x for x in (metrics[id(r)].get(key) for r in v.runs) if x is not None and math.isfinite(x)]


def _mean_ci(v: Variant, metrics: Metrics, key: str, digits: int = 4) -> str:
    ci = bootstrap_ci(_values(v, metrics, key))
    if ci.n == 0:
        return "—"
    return fmt(ci.mean, digits) + ("" if ci.n < 2 else f" {fmt_ci(ci.low, ci.high, digits)}")


def _efficiency_section(doc: Document, variants: list[Variant], metrics: Metrics, target: float | None) -> list[dict]:
    doc.heading("Efficiency")
    doc.paragraph("FLOPs per step: estimate from the model shape, 6 × multiply-accumulates per non-padding token "
                  "(trunk blocks, one block and one unembedding per head, causal attention over the mean sequence "
                  "length), times tokens per step; the weighting's own cost is not in it but is in the measured "
                  "tokens/s (median over logged steps) and training time (Σ step time, validation excluded). Peak "
                  "memory: the process's max RSS on CPU, allocator peak on CUDA. Steps to target: first validation "
                  f"step with val loss ≤ {fmt(target)} (the worst final val loss of all runs, unless given). Every "
                  "method has the same steps and records per step; tokens seen differ only where the records "
                  "do (the critic also trains on incorrect solutions).")
    headers = ["variant", "FLOPs/step (est.)", "tokens/s", "train time (s)", "peak memory (MB)", "tokens seen",
               "steps to target (reached/runs)"]
    rows, out = [], []
    for v in variants:
        reached = _values(v, metrics, "steps_to_target")
        entry = {k: bootstrap_ci(_values(v, metrics, k)).mean for k in
                 ("flops_per_step", "tokens_per_s", "train_time_s", "peak_mem_mb", "tokens_seen", "steps_to_target")}
        out.append({"variant": v.label, **entry, "reached": len(reached), "runs": len(v.runs)})
        rows.append([v.label, fmt(entry["flops_per_step"], 3), _mean_ci(v, metrics, "tokens_per_s", 4),
                     _mean_ci(v, metrics, "train_time_s", 4), _mean_ci(v, metrics, "peak_mem_mb", 4),
                     fmt(entry["tokens_seen"], 6), f"{fmt(entry['steps_to_target'])} ({len(reached)}/{len(v.runs)})"])
    doc.table(headers, rows)
    return out


def _stability_section(doc: Document, variants: list[Variant], metrics: Metrics) -> list[dict]:
    doc.heading("Stability")
    doc.paragraph("Gradient norm before clipping (mean over logged steps; max over steps and seeds); weight entropy "
                  "of the last logged step (nats, of w/Σw over the batch's valid entries); spread of the final "
                  "validation loss across seeds (sample sd); value drift and explained variance of the critic's "
                  "value head at the last validation (critic only).")
    headers = ["variant", "grad norm (mean)", "grad norm (max)", "final weight entropy", "final frac w≈0",
               "sd of final val loss over seeds", "non-finite steps", "value drift (final)", "explained var (final)"]
    rows, out = [], []
    for v in variants:
        finals = _values(v, metrics, "val_loss")
        sd = statistics.stdev(finals) if len(finals) > 1 else None
        grad_max = _values(v, metrics, "grad_norm_max")
        entry = {"variant": v.label, "val_loss_sd": sd, "grad_norm_max": max(grad_max) if grad_max else None}
        entry.update({k: bootstrap_ci(_values(v, metrics, k)).mean for k in
                      ("grad_norm_mean", "w_entropy_final", "w_frac_zero_final", "val_drift_final",
                       "val_explained_var_final")})
        entry["bad_steps"] = sum(_values(v, metrics, "bad_steps"))
        out.append(entry)
        rows.append([v.label, _mean_ci(v, metrics, "grad_norm_mean"), fmt(entry["grad_norm_max"]),
                     _mean_ci(v, metrics, "w_entropy_final"), _mean_ci(v, metrics, "w_frac_zero_final"), fmt(sd),
                     fmt(entry["bad_steps"]), _mean_ci(v, metrics, "val_drift_final"),
                     _mean_ci(v, metrics, "val_explained_var_final")])
    doc.table(headers, rows)
    return out


LOCALISATION = [("loc_auc_incorrect", "loc AUC (incorrect)"), ("loc_auc_correct", "loc AUC (correct)"),
                ("loc_lift_incorrect", "lift (incorrect)"), ("loc_lift_correct", "lift (correct)")]


def _localisation_section(doc: Document, variants: list[Variant], metrics: Metrics) -> list[dict]:
    """Where each variant's weights go: on the ground-truth decisive targets (last validation; pooled over heads,
    then per head) and on EOS (mean over logged steps). report.json: every key's mean and CI per variant."""
    doc.heading("Localisation (mean and 95% bootstrap CI over seeds)")
    eos = [("eos_share", "EOS share"), ("eos_entry_share", "EOS entry share")]
    H = max(r.n_heads for v in variants for r in v.runs)
    keys = [k for k, _ in LOCALISATION + eos] + [f"{k}_h{h}" for h in range(1, H + 1) for k, _ in LOCALISATION]
    out = [{"variant": v.label, "metric": key, "n": ci.n, "mean": ci.mean, "low": ci.low, "high": ci.high}
           for v in variants for key in keys if (ci := bootstrap_ci(_values(v, metrics, key))).n]
    if not out:
        doc.paragraph("No run logged localisation metrics (loc_* in eval rows: validation records with decisive "
                      "spans) or EOS shares.")
        return out
    doc.paragraph("loc AUC: probability that the weight of a decisive target (a token where an incorrect solution "
                  "differs from the correct one it was mutated from; on a correct solution, where its mutants "
                  "changed it) exceeds that of another target of the same records, ties ½, at the last validation; "
                  "lift: the decisive targets' share of the weight ÷ their share of the entries. 0.5 / 1.0 = no "
                  "localisation (uniform weights); above: more weight per entry on decisive targets (on incorrect "
                  "records: on imitating the bug), below: less. EOS share: share of the training weight on targets "
                  "that are the last completion token (EOS), mean over logged steps; EOS entry share: their share "
                  "of the entries (EOS share = entry share: no EOS emphasis).")
    doc.table(["variant", *[label for _, label in LOCALISATION + eos]],
              [[v.label, *[_mean_ci(v, metrics, k) for k, _ in LOCALISATION + eos]] for v in variants])
    doc.table(["variant", "head", *[label for _, label in LOCALISATION]],
              [[v.label, str(h), *[_mean_ci(v, metrics, f"{k}_h{h}") for k, _ in LOCALISATION]]
               for v in variants for h in range(1, H + 1)
               if any(_values(v, metrics, f"{k}_h{h}") for k, _ in LOCALISATION)])
    return out


CRITIC_COLUMNS = [("val_auc_last", "AUC of V before the last token"), ("val_explained_var", "explained variance"),
                  ("val_loc_auc_neg_adv", "loc AUC of −Â (incorrect)"), ("val_loc_auc_abs_td", "loc AUC of abs(δ) (incorrect)")]


def _critic_section(doc: Document, variants: list[Variant], metrics: Metrics) -> list[dict]:
    """The value head's signal, per run with its bootstrap CI, at the end of stage 1 and at the last validation; the
    localisation of −Â and |δ| on the decisive tokens of incorrect records. report.json: one row per run."""
    rows = []
    for v in variants:
        for r in v.runs:
            found = {k: x for k, x in metrics[id(r)].items() if k.startswith(("stage1_", "final_"))}
            if any(k.startswith("stage1_") for k in found):
                rows.append({"variant": v.label, "seed": r.seed, **found})
    if not rows:
        return rows
    doc.heading("Critic: what the value head learned (validation records, correct and incorrect)")
    doc.paragraph("AUC of V(s) before each record's last token separating correct from incorrect records, with its 95% "
                  "bootstrap CI over validation records (0.5 = no signal); explained variance of the Monte-Carlo "
                  "returns; loc AUC of −Â_j and of |δ_j|: how well the negated advantage and the TD error of target "
                  "token j pick out the decisive tokens (the bug) of incorrect records (0.5 = not at all). Stage 1: "
                  "the value head alone on the base model; final: after stage 2 (weighted fine-tuning).")
    table = []
    for row in rows:
        cells = [row["variant"], str(row["seed"])]
        for prefix in ("stage1_", "final_"):
            auc = fmt(row.get(prefix + "val_auc_last"), 3)
            cells.append(auc + " " + fmt_ci(row.get(prefix + "val_auc_ci_low"), row.get(prefix + "val_auc_ci_high"), 3))
            cells += [fmt(row.get(prefix + key), 3) for key, _ in CRITIC_COLUMNS[1:]]
        table.append(cells)
    labels = [label for _, label in CRITIC_COLUMNS]
    doc.table(["variant", "seed", *[f"stage 1: {x}" for x in labels], *[f"final: {x}" for x in labels]], table)
    return rows


# ---- analysis --------------------------------------------------------------------------------------------


def _analysis_section(doc: Document, variants: list[Variant], data: dict[str, Any]) -> None:
    doc.heading("Weight distributions per head (all logged histograms, seeds pooled)")
    rows = []
    for v in variants:
        hists = [h for h in map(plots.aggregated_histograms, v.runs) if h is not None]
        for k in sorted(hists[0][1]) if hists else []:
            edges = np.array(hists[0][0])
            counts = sum(h[1][k] for h in hists)
            total = max(int(counts.sum()), 1)
            rows.append([v.label, str(k), fmt(float(counts[edges[:-1] < 0.125].sum()) / total),
                         fmt(float(counts[(edges[:-1] >= 0.875) & (edges[:-1] < 1.125)].sum()) / total),
                         fmt(float(counts[edges[:-1] >= 2].sum()) / total), str(total)])
    doc.table(["variant", "head", "frac w < 0.125", "frac 0.875 ≤ w < 1.125", "frac w ≥ 2", "entries"], rows)
    data["error_by_token_difficulty"] = _token_difficulty(doc, variants)
    data["error_by_problem_difficulty"] = _problem_difficulty(doc, variants)


def _token_difficulty(doc: Document, variants: list[Variant]) -> list[dict]:
    doc.heading("Top-1 error rate by token difficulty (reference-model CE of the target token)")
    found = [r.heads["difficulty"] for v in variants for r in v.runs if r.heads and "difficulty" in r.heads]
    if not found:
        doc.paragraph("No run has analysis/heads.json with reference-CE bins (written by `wmtp sweep` when a "
                      "reference model is part of the sweep).")
        return []
    labels = found[0]["labels"]
    rows, out = [], []
    for v in variants:
        diffs = [r.heads["difficulty"] for r in v.runs if r.heads and "difficulty" in r.heads]
        for k in range(1, max(r.n_heads for r in v.runs) + 1):
            per_bin = [[d[f"error_h{k}"][i] for d in diffs if f"error_h{k}" in d and d[f"error_h{k}"][i] is not None]
                       for i in range(len(labels))]
            means = [statistics.fmean(x) if x else None for x in per_bin]
            out.append({"variant": v.label, "head": k, "error": means})
            rows.append([v.label, str(k), *[fmt(m) for m in means]])
    counts = found[0].get("n_h1", [])
    doc.table(["variant", "head", *[f"{lab} nats (n={n})" for lab, n in zip(labels, counts)]], rows)
    return out


def _problem_difficulty(doc: Document, variants: list[Variant]) -> list[dict]:
    doc.heading("Failure rate by problem difficulty (1 − pass@1, mean over problems and seeds)")
    rows, out = [], []
    for v in variants:
        for bench in sorted({b for r in v.runs for b in r.evals}):
            groups: dict[str, list[float]] = {}
            for r in v.runs:
                for p in r.evals[bench].get("per_problem", []) if bench in r.evals else []:
                    if p.get("difficulty") is not None and p["n"] >= 1:
                        groups.setdefault(str(p["difficulty"]), []).append(1 - pass_at_k(p["n"], p["c"], 1))
            for level, fails in sorted(groups.items()):
                out.append({"variant": v.label, "bench": bench, "difficulty": level,
                            "failure_rate": statistics.fmean(fails), "n": len(fails)})
                rows.append([v.label, bench, level, fmt(statistics.fmean(fails)), str(len(fails))])
    if rows:
        doc.table(["variant", "benchmark", "difficulty", "failure rate", "problem × seed pairs"], rows)
    else:
        doc.paragraph("No run has an evaluation with per-problem difficulty (eval/<bench>.json).")
    return out


def _figures_section(doc: Document, variants: list[Variant], out_dir: Path) -> None:
    fig_dir = out_dir / "figures"
    doc.heading("Figures")
    doc.figure(plots.loss_curves(variants, fig_dir / "loss_curves.png"),
               "Loss curves: mean over seeds, band from min to max seed", relative_to=out_dir)
    doc.figure(plots.weight_histograms(variants, fig_dir / "weight_histograms.png"),
               "Normalised weight distribution per head", relative_to=out_dir)
    doc.figure(plots.metric_over_time(variants, "w_entropy", fig_dir / "weight_entropy.png",
                                      title="weight entropy over training"),
               "Weight entropy over time (uniform = log of the number of valid entries)", relative_to=out_dir)
    doc.figure(plots.bars_per_head(variants, fig_dir / "head_accuracy.png", title="per-head top-1 accuracy",
                                   ylabel="accuracy", value=lambda r, k: (r.heads or {}).get(f"acc_h{k}")),
               "Per-head top-1 accuracy on the correct validation solutions (bars: mean, whiskers: min–max seed)",
               relative_to=out_dir)
    doc.figure(plots.error_by_difficulty(variants, fig_dir / "error_by_difficulty.png"),
               "Head-1 error rate by reference CE of the target token", relative_to=out_dir)
    drift = plots.metric_over_time(variants, "val_drift", fig_dir / "value_drift.png", kind="eval",
                                   title="critic value drift vs the stage-1 anchor")
    if drift is not None:
        doc.figure(drift, "Value drift over training (critic)", relative_to=out_dir)
