"""`wmtp report RUNS…`: compare run directories (variants × seeds) → report.md, report.html, report.json, PNGs.

Reads only run directories: config.yaml, meta.json, metrics.jsonl, eval/<bench>.json, analysis/heads.json and
model/wmtp_model.json. Each metric is shown as its mean over seeds with a 95% percentile-bootstrap interval,
and tested by a paired two-sided Wilcoxon signed-rank test (pairs: the same seed; for pass@k also the same
problem) against each of the variant's comparisons (wmtp.analysis.runs.Variant.comparisons): uniform, uniform on
the same data, its shuffled / random controls. Every test shows its smallest attainable p and its minimum
detectable effect (MDE; wmtp.analysis.stats). A critic run whose stage-1 validation AUC has a CI reaching 0.5
puts a warning at the top (critic_signal).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wmtp.analysis import plots
from wmtp.analysis.document import Document
from wmtp.analysis.metrics import run_metrics, target_val_loss
from wmtp.analysis.runs import RunData, Variant, find_runs, group_variants, load_run
from wmtp.analysis.stats import ALPHA, POWER, PairedTest, bootstrap_ci, min_p_at, paired_wilcoxon
from wmtp.eval.passk import pass_at_k


@dataclass(frozen=True)
class MetricSpec:
    key: str
    label: str


Metrics = dict[int, dict[str, float | None]]  # id(run) → run_metrics(run)


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
    data["results"] = _results_section(doc, variants, metrics)
    data["comparisons"] = _comparisons_section(doc, variants, metrics, data["results"])
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


# ---- results ---------------------------------------------------------------------------------------------


def result_specs(runs: list[RunData], metrics: Metrics) -> list[MetricSpec]:
    """The rows of the results table that at least one run has a value for, in a fixed order."""
    H = max(r.n_heads for r in runs)
    specs = [MetricSpec("val_loss", "validation loss (last logged validation, mean CE over heads)")]
    specs += [MetricSpec(f"heldout_ce_h{k}", f"held-out CE head {k} (final model, correct validation solutions)")
              for k in range(1, H + 1)]
    specs += [MetricSpec(f"acc_h{k}", f"top-1 accuracy head {k}") for k in range(1, H + 1)]
    benches = sorted({key for m in metrics.values() for key in m if " " in key})  # "<bench> <summary key>"
    specs += [MetricSpec(key, key) for key in benches]
    return [s for s in specs if any(m.get(s.key) is not None for m in metrics.values())]


def _results_section(doc: Document, variants: list[Variant], metrics: Metrics) -> list[dict[str, Any]]:
    runs = [r for v in variants for r in v.runs]
    doc.heading("Results (mean and 95% bootstrap CI over seeds; paired Wilcoxon vs uniform)")
    headers = ["metric", "variant", "n", "mean", "95% CI", "Δ vs uniform (paired mean)", "Wilcoxon p", "W",
               "n pairs (≠0)", "min p", "MDE"]
    rows = []
    for spec in result_specs(runs, metrics):
        for v in variants:
            rows += _metric_rows(spec, v, v.baseline, metrics, against="uniform")
    doc.table(headers, [[row["metric"], row["variant"], str(row["n"]), _fmt(row["mean"]), _ci(row["low"], row["high"]),
                         _fmt(row["delta"]), _fmt(row["pvalue"], 3), _fmt(row["statistic"]), row["pairs"],
                         _fmt(row["min_p"], 3), _mde(row)] for row in rows])
    unigram = [r.heads["unigram_ce"] for r in runs if r.heads and r.heads.get("unigram_ce") is not None]
    if unigram:
        doc.paragraph(f"Reference point: a unigram model of the training targets (add-one smoothing) has held-out CE "
                      f"**{statistics.fmean(unigram):.4f}** nats on the same correct validation solutions.")
    return rows


def _metric_rows(spec: MetricSpec, v: Variant, other: Variant | None, metrics: Metrics, *, against: str) -> list[dict]:
    """The rows of one metric of `v` tested against `other` (kind `against`): by seed, and for pass@k also by problem."""
    def by_seed(variant: Variant) -> dict:
        return {r.seed: metrics[id(r)].get(spec.key) for r in variant.runs}

    rows = [_compare(spec.label, v, by_seed(v), None if other is None else by_seed(other), paired_by="seed")]
    if " pass@" in spec.key:
        rows.append(_per_problem_row(spec, v, other))
    out = [row for row in rows if row is not None]
    for row in out:
        row.update(against=against, against_variant=None if other is None else other.label)
    return out


def _compare(metric: str, v: Variant, values: dict, base: dict | None, *, paired_by: str) -> dict[str, Any] | None:
    present = {k: x for k, x in values.items() if x is not None and math.isfinite(x)}
    if not present:
        return None
    ci = bootstrap_ci(list(present.values()))
    test: PairedTest | None = None if base is None else paired_wilcoxon(present, base, paired_by=paired_by)
    delta = None
    if base is not None:
        diffs = [present[k] - base[k] for k in present if base.get(k) is not None and math.isfinite(base[k])]
        delta = statistics.fmean(diffs) if diffs else None
    return {
        "metric": metric, "variant": v.label, "n": ci.n, "mean": ci.mean, "low": ci.low, "high": ci.high,
        "delta": delta, "test": None if test is None else test.name, "paired_by": paired_by,
        "statistic": None if test is None else test.statistic, "pvalue": None if test is None else test.pvalue,
        "pairs": "" if test is None else f"{test.n} ({test.n_nonzero})",
        "n_pairs": None if test is None else test.n, "n_nonzero": None if test is None else test.n_nonzero,
        "min_p": None if test is None else test.min_pvalue, "mde": None if test is None else test.mde,
        "detectable": None if test is None else test.detectable,
    }


def per_problem_pass(run: RunData, bench: str, k: int) -> dict[str, float]:
    """problem id → pass@k of that problem in this run (unbiased estimator from its n samples, c passing)."""
    rows = run.evals.get(bench, {}).get("per_problem", [])
    return {p["problem_id"]: pass_at_k(p["n"], p["c"], k) for p in rows if p["n"] >= k}


def _per_problem_row(spec: MetricSpec, v: Variant, other: Variant | None) -> dict[str, Any] | None:
    bench, key = spec.key.split(" ", 1)
    k = int(key.removeprefix("pass@"))

    def mean_over_seeds(variant: Variant) -> dict[str, float]:
        per_seed = [per_problem_pass(r, bench, k) for r in variant.runs]
        problems = set.intersection(*(set(p) for p in per_seed)) if per_seed else set()
        return {pid: statistics.fmean(p[pid] for p in per_seed) for pid in problems}

    mine = mean_over_seeds(v)
    if not mine:
        return None
    base = None if other is None else mean_over_seeds(other)
    return _compare(f"{spec.label}, per problem (mean over seeds)", v, mine, base, paired_by="problem")


def _comparisons_section(doc: Document, variants: list[Variant], metrics: Metrics, results: list[dict]) -> list[dict]:
    """Every variant against each of its comparisons (uniform rows: those of the results table), and the power of
    the tests. Returns all comparison rows (uniform included)."""
    runs = [r for v in variants for r in v.runs]
    specs = result_specs(runs, metrics)
    rows = []
    for v in variants:
        for kind, other in v.comparisons():
            if kind != "uniform":
                rows += [row for spec in specs for row in _metric_rows(spec, v, other, metrics, against=kind)]
    doc.heading("Comparisons with uniform on the same data and with the shuffled controls (paired Wilcoxon)")
    if rows:
        doc.paragraph("A method against its control (`shuffled:X`: X's weights permuted among the batch's valid "
                      "entries) isolates the link of the weights to the tokens; against uniform on the same data "
                      "(`uniform@all`: correct + incorrect records, the critic's data) it isolates the weighting "
                      "from the data. Δ: paired mean of variant − comparison.")
        doc.table(["metric", "variant", "against", "n", "mean", "Δ (paired mean)", "Wilcoxon p", "W", "n pairs (≠0)",
                   "min p", "MDE"],
                  [[r["metric"], r["variant"], f"{r['against_variant']} ({r['against']})", str(r["n"]), _fmt(r["mean"]),
                    _fmt(r["delta"]), _fmt(r["pvalue"], 3), _fmt(r["statistic"]), r["pairs"], _fmt(r["min_p"], 3),
                    _mde(r)] for r in rows])
    else:
        doc.paragraph("No variant has a control (`shuffled:<method>`) or a uniform variant on its own data "
                      "(`uniform@all`) among the reported runs.")
    tested = [r for r in results if r["against_variant"] is not None] + rows
    doc.paragraph(power_note(tested))
    return [r for r in results if r["against_variant"] is not None] + rows


def power_note(rows: list[dict]) -> str:
    """What the tests can detect at their n: the MDE formula, and whether the by-seed and by-problem tests can reach
    p < α at all (rows: report rows with paired_by, n_pairs, min_p)."""
    text = (f"Power (α = {ALPHA} two-sided, power 1 − β = {POWER}): **min p** is the smallest p the test can "
            "attain with its observed non-zero |differences|, when all have one sign (n ≤ 50 non-zero differences: "
            f"exactly 2/2^n); **MDE** is the smallest true mean difference detected with probability "
            f"{POWER}, (z_{{1−α/2}} + z_{{1−β}}) · sd(d) / √(n · 3/π) with sd(d) the sample SD of the n paired "
            "differences and 3/π the signed-rank test's asymptotic relative efficiency to the paired t-test "
            "(approximate for few or discrete differences); `(unreachable)` when min p > α: no effect is detectable at "
            "that n, whatever the formula gives.")
    for paired_by in ("seed", "problem"):
        tests = [r for r in rows if r.get("paired_by") == paired_by and r.get("n_pairs")]
        if not tests:
            continue
        ns = sorted({r["n_pairs"] for r in tests})
        n_text = f"n = {ns[-1]}" if len(ns) == 1 else f"n = {ns[0]}–{ns[-1]}"
        best = min_p_at(ns[-1])
        blocked = sum(not r["detectable"] for r in tests)
        if best > ALPHA:
            text += (f" **The by-{paired_by} tests cannot reach p < {ALPHA}, whatever the effect**: with {n_text} "
                     f"pairs the smallest p any outcome gives is 2/2^{ns[-1]} = {_fmt(best, 3)}.")
        else:
            text += (f" The by-{paired_by} tests ({n_text} pairs) can reach p < {ALPHA} (down to 2/2^{ns[-1]} = "
                     f"{_fmt(best, 3)})" + (f"; {blocked} of {len(tests)} cannot with their observed zero differences"
                                           if blocked else "") + ".")
    return text


def _mde(row: dict[str, Any]) -> str:
    if row.get("min_p") is None:
        return "—"
    return _fmt(row["mde"], 3) + ("" if row["detectable"] else " (unreachable)")


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
    listed = "; ".join(f"`{f['run']}` ({f['variant']}, seed {f['seed']}): AUC {_fmt(f['auc'], 3)}, 95% CI "
                       f"{_ci(f['ci_low'], f['ci_high'], 3)}" for f in found)
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
    return _fmt(ci.mean, digits) + ("" if ci.n < 2 else f" {_ci(ci.low, ci.high, digits)}")


def _efficiency_section(doc: Document, variants: list[Variant], metrics: Metrics, target: float | None) -> list[dict]:
    doc.heading("Efficiency")
    doc.paragraph("FLOPs per step: estimate from the model shape, 6 × multiply-accumulates per non-padding token "
                  "(trunk blocks, one block and one unembedding per head, causal attention over the mean sequence "
                  "length), times tokens per step; the weighting's own cost is not in it but is in the measured "
                  "tokens/s (median over logged steps) and training time (Σ step time, validation excluded). Peak "
                  "memory: the process's max RSS on CPU, allocator peak on CUDA. Steps to target: first validation "
                  f"step with val loss ≤ {_fmt(target)} (the worst final val loss of all runs, unless given). Every "
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
        rows.append([v.label, _fmt(entry["flops_per_step"], 3), _mean_ci(v, metrics, "tokens_per_s", 4),
                     _mean_ci(v, metrics, "train_time_s", 4), _mean_ci(v, metrics, "peak_mem_mb", 4),
                     _fmt(entry["tokens_seen"], 6), f"{_fmt(entry['steps_to_target'])} ({len(reached)}/{len(v.runs)})"])
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
        rows.append([v.label, _mean_ci(v, metrics, "grad_norm_mean"), _fmt(entry["grad_norm_max"]),
                     _mean_ci(v, metrics, "w_entropy_final"), _mean_ci(v, metrics, "w_frac_zero_final"), _fmt(sd),
                     _fmt(entry["bad_steps"]), _mean_ci(v, metrics, "val_drift_final"),
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
            auc = _fmt(row.get(prefix + "val_auc_last"), 3)
            cells.append(auc + " " + _ci(row.get(prefix + "val_auc_ci_low"), row.get(prefix + "val_auc_ci_high"), 3))
            cells += [_fmt(row.get(prefix + key), 3) for key, _ in CRITIC_COLUMNS[1:]]
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
            rows.append([v.label, str(k), _fmt(float(counts[edges[:-1] < 0.125].sum()) / total),
                         _fmt(float(counts[(edges[:-1] >= 0.875) & (edges[:-1] < 1.125)].sum()) / total),
                         _fmt(float(counts[edges[:-1] >= 2].sum()) / total), str(total)])
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
            rows.append([v.label, str(k), *[_fmt(m) for m in means]])
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
                rows.append([v.label, bench, level, _fmt(statistics.fmean(fails)), str(len(fails))])
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


# ---- formatting ------------------------------------------------------------------------------------------


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if x != 0 and (abs(x) >= 1e6 or abs(x) < 1e-3):
        return f"{x:.{max(digits - 1, 1)}e}"
    return f"{x:.{digits}g}"


def _ci(low: float | None, high: float | None, digits: int = 4) -> str:
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "—"
    return f"[{_fmt(low, digits)}, {_fmt(high, digits)}]"

