"""The report's tests: each metric of each variant as its mean over seeds with a 95% percentile-bootstrap CI,
tested by a paired two-sided Wilcoxon signed-rank test (by seed; for pass@k also by problem) against uniform
(the results table) and against its other comparisons (uniform on the same data, its controls), with each test's
smallest attainable p and MDE, and the power note."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from wmtp.analysis.document import Document
from wmtp.analysis.formatting import fmt, fmt_ci
from wmtp.analysis.runs import RunData, Variant
from wmtp.analysis.stats import ALPHA, POWER, PairedTest, bootstrap_ci, min_p_at, paired_wilcoxon
from wmtp.eval.passk import pass_at_k


@dataclass(frozen=True)
class MetricSpec:
    """A row of the results table: the run_metrics key and its label."""

    key: str
    label: str


Metrics = dict[int, dict[str, float | None]]  # id(run) → run_metrics(run)


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


def results_section(doc: Document, variants: list[Variant], metrics: Metrics) -> list[dict[str, Any]]:
    runs = [r for v in variants for r in v.runs]
    doc.heading("Results (mean and 95% bootstrap CI over seeds; paired Wilcoxon vs uniform)")
    headers = ["metric", "variant", "n", "mean", "95% CI", "Δ vs uniform (paired mean)", "Wilcoxon p", "W",
               "n pairs (≠0)", "min p", "MDE"]
    rows = []
    for spec in result_specs(runs, metrics):
        for v in variants:
            rows += _metric_rows(spec, v, v.baseline, metrics, against="uniform")
    doc.table(headers, [[row["metric"], row["variant"], str(row["n"]), fmt(row["mean"]),
                         fmt_ci(row["low"], row["high"]), fmt(row["delta"]), fmt(row["pvalue"], 3),
                         fmt(row["statistic"]), row["pairs"], fmt(row["min_p"], 3), _mde(row)] for row in rows])
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
        # In id order: the bootstrap resamples by position, so a set's (hash-seeded) order would move the CI.
        return {pid: statistics.fmean(p[pid] for p in per_seed) for pid in sorted(problems)}

    mine = mean_over_seeds(v)
    if not mine:
        return None
    base = None if other is None else mean_over_seeds(other)
    return _compare(f"{spec.label}, per problem (mean over seeds)", v, mine, base, paired_by="problem")


def comparisons_section(doc: Document, variants: list[Variant], metrics: Metrics, results: list[dict]) -> list[dict]:
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
                  [[r["metric"], r["variant"], f"{r['against_variant']} ({r['against']})", str(r["n"]), fmt(r["mean"]),
                    fmt(r["delta"]), fmt(r["pvalue"], 3), fmt(r["statistic"]), r["pairs"], fmt(r["min_p"], 3),
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
                     f"pairs the smallest p any outcome gives is 2/2^{ns[-1]} = {fmt(best, 3)}.")
        else:
            text += (f" The by-{paired_by} tests ({n_text} pairs) can reach p < {ALPHA} (down to 2/2^{ns[-1]} = "
                     f"{fmt(best, 3)})" + (f"; {blocked} of {len(tests)} cannot with their observed zero differences"
                                           if blocked else "") + ".")
    return text


def _mde(row: dict[str, Any]) -> str:
    if row.get("min_p") is None:
        return "—"
    return fmt(row["mde"], 3) + ("" if row["detectable"] else " (unreachable)")
