"""Scalar metrics of one run, read from its files: final quality, efficiency and stability.

Every value is a float or None (not logged by this run: e.g. value drift exists for the critic only).
"""

from __future__ import annotations

import statistics
from typing import Any

from wmtp.analysis.runs import RunData


def training_flops_per_token(trunk: dict[str, Any], *, n_heads: int, head1_is_trunk_layer: bool, seq_len: float) -> float:
    """Estimated FLOPs of one training step per token: 6 × multiply-accumulates of the forward (forward 2·MAC,
    backward twice that), from the HF trunk config (hidden_size D, intermediate_size F, heads, head_dim hd, V).

    Per token: every block on its path — the trunk's and one per head (head 1 may be the trunk's last) — does
    D·hd·(2·n_q + 2·n_kv) (q, k, v, o) + 3·D·F (SwiGLU MLP) + 2·n_q·hd·(seq_len + 1)/2 (causal attention over
    the mean context); every head does D·V for its unembedding.
    """
    D, F, V = trunk["hidden_size"], trunk["intermediate_size"], trunk["vocab_size"]
    n_q = trunk["num_attention_heads"]
    n_kv = trunk.get("num_key_value_heads") or n_q
    hd = trunk.get("head_dim") or D // n_q
    blocks = trunk["num_hidden_layers"] + n_heads - int(head1_is_trunk_layer)
    per_block = D * hd * (2 * n_q + 2 * n_kv) + 3 * D * F + 2 * n_q * hd * (seq_len + 1) / 2
    return 6.0 * (blocks * per_block + n_heads * D * V)


def run_metrics(run: RunData, *, target_loss: float | None = None) -> dict[str, float | None]:
    """Final validation CE (total and per head), benchmark summaries, per-head accuracy, efficiency, stability,
    localisation (the last validation's loc_* metrics; eos_share and eos_entry_share: means over logged steps)."""
    train, evals = run.kind("train"), run.kind("eval")
    out: dict[str, float | None] = {}
    final = evals[-1] if evals else {}
    out["val_loss"] = final.get("val_loss")
    for k in range(1, run.n_heads + 1):
        out[f"val_ce_h{k}"] = final.get(f"val_ce_h{k}")
    for bench, result in run.evals.items():
        for key, value in result.get("summary", {}).items():
            out[f"{bench} {key}"] = value
    if run.heads is not None:  # the same held-out records for every run (analysis/heads.py)
        for k in range(1, run.n_heads + 1):
            out[f"heldout_ce_h{k}"] = run.heads.get(f"ce_h{k}")
            out[f"acc_h{k}"] = run.heads.get(f"acc_h{k}")
    out.update(_efficiency(run, train, evals, target_loss))
    out.update(_stability(train, evals))
    out.update(_localisation(train, final))
    out.update(_critic(run.kind("critic_eval"), final))
    return out


CRITIC_KEYS = ("val_auc_last", "val_auc_ci_low", "val_auc_ci_high", "val_explained_var", "val_loc_auc_neg_adv",
               "val_loc_auc_abs_td")


def _critic(stage1: list[dict], final_eval: dict) -> dict[str, float | None]:
    """The critic's validation metrics at the end of stage 1 (`stage1_<key>`, the last critic_eval row) and at the
    last validation (`final_<key>`); absent for runs without a critic."""
    out: dict[str, float | None] = {}
    for prefix, row in (("stage1_", stage1[-1] if stage1 else {}), ("final_", final_eval)):
        out.update({prefix + key: row[key] for key in CRITIC_KEYS if row.get(key) is not None})
    return out


def _localisation(train: list[dict], final_eval: dict) -> dict[str, float | None]:
    out: dict[str, float | None] = {k: v for k, v in final_eval.items() if k.startswith("loc_")}
    for key in ("eos_share", "eos_entry_share"):
        values = [r[key] for r in train if r.get(key) is not None]
        out[key] = statistics.fmean(values) if values else None
    return out


def _efficiency(run: RunData, train: list[dict], evals: list[dict], target_loss: float | None) -> dict[str, float | None]:
    out: dict[str, float | None] = {"tokens_per_s": None, "train_time_s": None, "peak_mem_mb": None,
                                    "tokens_seen": None, "flops_per_step": None, "steps_to_target": None}
    if train:
        out["tokens_per_s"] = statistics.median(r["tokens_per_s"] for r in train)
        out["train_time_s"] = sum(r["step_s"] for r in train) * _log_every(run)
        out["peak_mem_mb"] = max(r["peak_mem_mb"] for r in train)
        out["tokens_seen"] = float(train[-1]["tokens_seen"])
        out["flops_per_step"] = _flops_per_step(run, train)
    if target_loss is not None:
        reached = [r["step"] for r in evals if r["val_loss"] <= target_loss]
        out["steps_to_target"] = float(reached[0]) if reached else None
    return out


def _log_every(run: RunData) -> int:
    """Train rows are written every train.log_every steps: Σ step_s over the rows times that estimates the total."""
    return int(run.config["train"].get("log_every", 1))


def _flops_per_step(run: RunData, train: list[dict]) -> float | None:
    if run.model_meta is None:
        return None
    tc = run.config["train"]
    tokens_per_step = train[-1]["tokens_seen"] / train[-1]["step"]
    seq_len = tokens_per_step / (tc["batch_size"] * tc.get("grad_accum", 1))
    per_token = training_flops_per_token(
        run.model_meta["trunk_config"], n_heads=run.model_meta["n_heads"],
        head1_is_trunk_layer=run.model_meta["head1_is_trunk_layer"], seq_len=seq_len,
    )
    return per_token * tokens_per_step


def _stability(train: list[dict], evals: list[dict]) -> dict[str, float | None]:
    def last(rows: list[dict], key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return values[-1] if values else None

    grad = [r["grad_norm"] for r in train]
    return {
        "grad_norm_mean": statistics.fmean(grad) if grad else None,
        "grad_norm_max": max(grad) if grad else None,
        "w_entropy_final": last(train, "w_entropy"),
        "w_frac_zero_final": last(train, "w_frac_zero"),
        "bad_steps": float(train[-1]["bad_steps"]) if train else None,
        "val_drift_final": last(evals, "val_drift"),
        "val_explained_var_final": last(evals, "val_explained_var"),
    }


def target_val_loss(runs: list[RunData]) -> float | None:
    """Default target of "steps to reach": the worst final validation loss of all runs, which every run reaches."""
    finals = [r.kind("eval")[-1]["val_loss"] for r in runs if r.kind("eval")]
    return max(finals) if finals else None
