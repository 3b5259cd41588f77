"""wmtp report on synthetic run directories written here: every table row present, figures non-empty,
statistics of the rows equal to scipy's on the same numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from wmtp.analysis.metrics import training_flops_per_token
from wmtp.analysis.report import write_report
from wmtp.analysis.runs import ReportError, find_runs
from wmtp.config import dump_yaml, load_config

H, SEEDS, STEPS = 2, (0, 1, 2, 3, 4), 40
TRUNK = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
         "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8, "vocab_size": 50}
PROBLEMS = [f"p{i}" for i in range(8)]


def final_loss(method: str, seed: int) -> float:
    return 2.0 + 0.1 * seed - (0.05 + 0.01 * seed if method == "rho1" else 0.0)


def passed(method: str, seed: int, pid: str) -> bool:
    i = int(pid[1:])
    return i < 3 or (method == "rho1" and i < 5) or (seed == 1 and i == 7)


def make_run(root, method: str, seed: int, *, overrides: tuple[str, ...] = (), name: str | None = None,
             shift: float = 0.0, extra_rows: tuple[dict, ...] = (), passes=None):
    """A run directory of `method`; shift: added to its final losses; passes(seed, pid): its per-problem result."""
    run = root / (name or f"{method}{''.join(o.split('=')[1] for o in overrides)}") / f"seed{seed}"
    cfg = load_config(None, [f"seed={seed}", f"run_dir={run}", f"model.n_heads={H}", f"weighting.name={method}",
                             "train.log_every=1", *(["weighting.rho1.reference=" + str(root / "ref")]
                                                   if method == "rho1" or "weighting.control_of=rho1" in overrides
                                                   else []), *overrides])
    (run / "eval").mkdir(parents=True)
    (run / "analysis").mkdir()
    (run / "model").mkdir()
    (run / "config.yaml").write_text(dump_yaml(cfg))
    rows = []
    for step in range(1, STEPS + 1):
        row = {"kind": "train", "step": step, "loss": 5 - 3 * step / STEPS, "lr": 1e-3, "grad_norm": 1.0 + seed,
               "tokens_per_s": 1000.0 + seed, "step_s": 0.5, "tokens_seen": 100 * step, "peak_mem_mb": 300.0 + seed,
               "skipped": False, "bad_steps": 0, "w_mean": 1.0, "w_std": 0.5, "w_max": 3.0,
               "w_entropy": 5.0 - (method == "rho1") * step / STEPS, "w_frac_zero": 0.1}
        rows.append(row)
        if step % 10 == 0:
            loss = final_loss(method, seed) + shift + (STEPS - step) / 10
            rows.append({"kind": "eval", "step": step, "val_loss": loss,
                         **{f"val_ce_h{k}": loss + 0.1 * k for k in range(1, H + 1)}})
            rows.append({"kind": "weights_hist", "step": step, "edges": [0.0, 1.0, 2.0, 3.0],
                         **{f"counts_h{k}": [k, 10, 5] for k in range(1, H + 1)}})
    rows += extra_rows
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ok = passes or (lambda s, pid: passed(method, s, pid))
    per_problem = [{"problem_id": pid, "difficulty": "easy" if int(pid[1:]) < 4 else "hard", "n": 1,
                    "c": int(ok(seed, pid)), "passed": [ok(seed, pid)]} for pid in PROBLEMS]
    summary = {"pass@1": float(np.mean([p["c"] for p in per_problem]))}
    (run / "eval" / "synthetic.json").write_text(json.dumps({"summary": summary, "per_problem": per_problem}))
    heads = {f"acc_h{k}": 0.5 - 0.1 * k + 0.01 * seed for k in range(1, H + 1)}
    heads |= {f"ce_h{k}": final_loss(method, seed) + shift + k for k in range(1, H + 1)}
    heads["difficulty"] = {"edges": [0.0, 1.0], "labels": ["[0, 1)", "≥ 1"], "n_h1": [10, 20], "n_h2": [10, 20],
                           **{f"error_h{k}": [0.1 * k, 0.5] for k in range(1, H + 1)}}
    (run / "analysis" / "heads.json").write_text(json.dumps(heads))
    (run / "model" / "wmtp_model.json").write_text(json.dumps(
        {"n_heads": H, "head1_is_trunk_layer": True, "trunk_config": TRUNK}))
    return run


@pytest.fixture
def report(tmp_path):
    for seed in SEEDS:
        make_run(tmp_path / "runs", "uniform", seed)
        make_run(tmp_path / "runs", "rho1", seed)
    path = write_report([tmp_path / "runs"], tmp_path / "out")
    return path, json.loads((tmp_path / "out" / "report.json").read_text())


def rows_of(data, metric):
    return {r["variant"]: r for r in data["results"] if r["metric"].startswith(metric)}


def test_every_results_row_is_present_with_scipy_statistics(report):
    path, data = report
    assert [v["label"] for v in data["variants"]] == ["uniform", "rho1"]
    metrics = {r["metric"] for r in data["results"]}
    for key in ("validation loss", "held-out CE head 1", "held-out CE head 2", "top-1 accuracy head 1",
                "top-1 accuracy head 2", "synthetic pass@1", "synthetic pass@1, per problem"):
        assert sum(m.startswith(key) for m in metrics) >= 1, key
        assert set(rows_of(data, key)) == {"uniform", "rho1"}, key
    val = rows_of(data, "validation loss")
    rho1 = [final_loss("rho1", s) for s in SEEDS]
    uniform = [final_loss("uniform", s) for s in SEEDS]
    assert val["rho1"]["mean"] == pytest.approx(np.mean(rho1))
    expected = stats.bootstrap((np.array(rho1),), np.mean, method="percentile", n_resamples=9999,
                               rng=np.random.default_rng(0)).confidence_interval
    assert (val["rho1"]["low"], val["rho1"]["high"]) == pytest.approx((expected.low, expected.high))
    # paired by seed: every difference is negative, so the exact two-sided p is 2 / 2^5
    assert val["rho1"]["pvalue"] == pytest.approx(2 / 2**5)
    assert val["rho1"]["pvalue"] == pytest.approx(stats.wilcoxon(np.array(rho1) - np.array(uniform)).pvalue)
    assert val["rho1"]["delta"] == pytest.approx(np.mean(np.array(rho1) - np.array(uniform)))
    assert val["uniform"]["pvalue"] is None  # the baseline is not tested against itself
    # pass@1 paired by problem (mean over seeds): problems 3 and 4 differ (1 vs 0, and seed 1's problem 7 is shared)
    by_problem = rows_of(data, "synthetic pass@1, per problem")["rho1"]
    assert by_problem["n"] == len(PROBLEMS) and by_problem["pairs"] == "8 (2)"
    text = path.read_text()
    for line in ("| validation loss", "| held-out CE head 2", "| top-1 accuracy head 1", "| synthetic pass@1, per problem"):
        assert line in text, line
    assert "Efficiency" in text and "Stability" in text and "token difficulty" in text and "problem difficulty" in text



def test_by_problem_interval_is_the_bootstrap_of_the_problems_in_id_order(report):
    """The same runs give the same interval in every process: the problems' means enter the bootstrap sorted by
    id, not in a set's hash-seeded order."""
    _, data = report
    by_problem = rows_of(data, "synthetic pass@1, per problem")["rho1"]
    means = [np.mean([passed("rho1", s, pid) for s in SEEDS]) for pid in sorted(PROBLEMS)]
    expected = stats.bootstrap((np.array(means),), np.mean, method="percentile", n_resamples=9999,
                               rng=np.random.default_rng(0)).confidence_interval
    assert (by_problem["low"], by_problem["high"]) == pytest.approx((expected.low, expected.high))

def test_figures_are_nonempty_pngs_linked_from_both_documents(report):
    path, _ = report
    out = path.parent
    md, html = path.read_text(), (out / "report.html").read_text()
    for name in ("loss_curves", "weight_histograms", "weight_entropy", "head_accuracy", "error_by_difficulty"):
        png = out / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, name
        assert f"figures/{name}.png" in md and f'src="figures/{name}.png"' in html, name
    assert "<table>" in html and html.count("<tr>") > 20


def test_efficiency_and_stability_numbers(report):
    _, data = report
    eff = {r["variant"]: r for r in data["efficiency"]}
    assert eff["uniform"]["tokens_per_s"] == pytest.approx(1002.0)
    assert eff["uniform"]["train_time_s"] == pytest.approx(STEPS * 0.5)
    assert eff["uniform"]["peak_mem_mb"] == pytest.approx(302.0)
    # target = worst final val loss = uniform seed 4 (2.4): reached at step 40 by it, earlier by better runs
    assert data["target_val_loss"] == pytest.approx(2.4)
    assert eff["uniform"]["reached"] == 5
    stab = {r["variant"]: r for r in data["stability"]}
    assert stab["uniform"]["val_loss_sd"] == pytest.approx(np.std([final_loss("uniform", s) for s in SEEDS], ddof=1))
    assert stab["rho1"]["w_entropy_final"] == pytest.approx(4.0)
    assert stab["uniform"]["grad_norm_max"] == pytest.approx(5.0)


def test_flops_estimate_matches_a_hand_count():
    # blocks: 2 trunk + 2 heads − 1 shared = 3; per block: qkvo 16·8·(2·2+2·1)=768, mlp 3·16·32=1536,
    # attention 2·2·8·(9+1)/2 = 160; unembedding 2 heads · 16·50 = 1600
    expected = 6 * (3 * (768 + 1536 + 160) + 1600)
    assert training_flops_per_token(TRUNK, n_heads=2, head1_is_trunk_layer=True, seq_len=9) == expected


def test_ablation_labels_and_baselines(tmp_path):
    for seed in (0, 1):
        make_run(tmp_path, "uniform", seed)
        make_run(tmp_path, "rho1", seed, overrides=("weighting.rho1.temperature=0.5",))
        make_run(tmp_path, "rho1", seed, overrides=("weighting.rho1.temperature=2.0",))
    write_report([tmp_path], tmp_path / "out")
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    labels = {v["label"]: v["baseline"] for v in data["variants"]}
    assert labels == {"uniform": None, "rho1 (rho1.temperature=0.5)": "uniform", "rho1 (rho1.temperature=2.0)": "uniform"}


def test_references_and_bases_are_not_compared_and_duplicates_are_refused(tmp_path):
    make_run(tmp_path, "uniform", 0)
    ref = make_run(tmp_path, "uniform", 1)
    ref.rename(tmp_path / "ref")
    make_run(tmp_path, "rho1", 0)
    assert {p.name for p in find_runs([tmp_path])} == {"seed0"}  # ref is rho1's reference
    base = make_run(tmp_path, "uniform", 7, name="base")
    make_run(tmp_path, "uniform", 0, overrides=(f"model.init_from={base / 'model'}",), name="tuned")
    assert base not in find_runs([tmp_path]) and tmp_path / "tuned" / "seed0" in find_runs([tmp_path])
    make_run(tmp_path / "again", "uniform", 0)
    with pytest.raises(ReportError, match="several runs with seed"):
        write_report([tmp_path], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no run directory"):
        find_runs([tmp_path / "empty"])


# ---- controls, the data-matched baseline, power ------------------------------------------------------------

CRITIC = ("data.train_on=all",)
SHUFFLED_CRITIC = ("weighting.control_of=critic", "data.train_on=all")
SHUFFLED_RHO1 = ("weighting.control_of=rho1",)
Z = 1.959963984540054 + 0.8416212335729143  # z_0.975 + z_0.8


def shuffled_rho1_passes(seed: int, pid: str) -> bool:
    return int(pid[1:]) < 4  # one problem more than uniform, one fewer than rho1 (problem 4)


@pytest.fixture
def controls(tmp_path):
    root = tmp_path / "runs"
    for seed in SEEDS:
        make_run(root, "uniform", seed)
        make_run(root, "rho1", seed)
        make_run(root, "shuffled", seed, overrides=SHUFFLED_RHO1, name="shuffled-of-rho1",
                 shift=-0.02 * seed, passes=shuffled_rho1_passes)
        make_run(root, "critic", seed, overrides=CRITIC, shift=-0.03)
        make_run(root, "shuffled", seed, overrides=SHUFFLED_CRITIC, name="shuffled-of-critic", shift=0.01 * seed)
        make_run(root, "uniform", seed, overrides=CRITIC, name="uniform-on-all", shift=-0.01)
    path = write_report([root], tmp_path / "out")
    return path, json.loads((tmp_path / "out" / "report.json").read_text())


def test_controls_and_data_matched_uniform_are_labelled_and_paired(controls):
    _, data = controls
    variants = {v["label"]: v for v in data["variants"]}
    # uniform first, then each method followed by its control (runs are found in path order: critic < rho1)
    assert list(variants) == ["uniform", "uniform@all", "critic", "shuffled:critic", "rho1", "shuffled:rho1"]
    assert {k: (v["baseline"], v["data_baseline"], v["controls"]) for k, v in variants.items()} == {
        "uniform": (None, None, []),
        "uniform@all": ("uniform", None, []),
        "rho1": ("uniform", None, ["shuffled:rho1"]),
        "shuffled:rho1": ("uniform", None, []),
        "critic": ("uniform", "uniform@all", ["shuffled:critic"]),  # uniform, and uniform on the critic's data
        "shuffled:critic": ("uniform", "uniform@all", []),
    }


def comparison(data, metric, variant, against):
    found = [r for r in data["comparisons"] if r["metric"].startswith(metric) and r["variant"] == variant
             and r["against_variant"] == against]
    assert len(found) == 1, (metric, variant, against, found)
    return found[0]


def test_comparisons_with_controls_by_seed_have_hand_computed_deltas_min_p_and_no_mde(controls):
    path, data = controls
    rho1 = np.array([final_loss("rho1", s) for s in SEEDS])
    shuffled = np.array([final_loss("shuffled", s) - 0.02 * s for s in SEEDS])
    row = comparison(data, "validation loss", "rho1", "shuffled:rho1")
    assert row["against"] == "control" and row["paired_by"] == "seed"
    assert row["delta"] == pytest.approx(np.mean(rho1 - shuffled))
    assert row["pvalue"] == pytest.approx(stats.wilcoxon(rho1 - shuffled).pvalue)
    assert row["min_p"] == 0.0625 and not row["detectable"]  # 5 seeds: p ≥ 2/2^5 > 0.05, nothing detectable
    assert row["mde"] == pytest.approx(Z * np.std(rho1 - shuffled, ddof=1) / math.sqrt(5 * 3 / math.pi))
    critic = np.array([final_loss("critic", s) - 0.03 for s in SEEDS])
    matched = np.array([final_loss("uniform", s) - 0.01 for s in SEEDS])
    row = comparison(data, "validation loss", "critic", "uniform@all")
    assert row["against"] == "uniform on the same data"
    assert row["delta"] == pytest.approx(np.mean(critic - matched))
    row = comparison(data, "validation loss", "critic", "shuffled:critic")
    assert row["delta"] == pytest.approx(np.mean(critic - np.array([final_loss("uniform", s) + 0.01 * s
                                                                    for s in SEEDS])))
    assert comparison(data, "validation loss", "critic", "uniform")["delta"] == pytest.approx(-0.03)
    text = path.read_text()
    assert "The by-seed tests cannot reach p < 0.05, whatever the effect**: with n = 5 pairs the smallest p any " \
        "outcome gives is 2/2^5 = 0.0625" in text
    assert "The by-problem tests (n = 8 pairs) can reach p < 0.05 (down to 2/2^8 = 0.00781)" in text
    assert "| validation loss (last logged validation, mean CE over heads) | critic | shuffled:critic (control) |" in text
    assert "(unreachable)" in text and "(z_{1−α/2} + z_{1−β}) · sd(d) / √(n · 3/π)" in text


def test_by_problem_comparison_with_its_control_has_the_hand_computed_mde(controls):
    _, data = controls
    row = comparison(data, "synthetic pass@1, per problem", "rho1", "shuffled:rho1")
    # rho1 passes p0..p4 (and p7 on seed 1), its control p0..p3: per-problem differences 0,0,0,0,1,0,0,0.2
    d = np.array([0, 0, 0, 0, 1, 0, 0, 0.2])
    assert row["paired_by"] == "problem" and row["n_pairs"] == 8 and row["n_nonzero"] == 2
    assert row["delta"] == pytest.approx(d.mean())
    assert row["min_p"] == pytest.approx(0.5) and not row["detectable"]  # two non-zero pairs: 2/2^2
    assert row["mde"] == pytest.approx(Z * d.std(ddof=1) / math.sqrt(8 * 3 / math.pi))  # zeros count in sd and n
    row = comparison(data, "synthetic pass@1, per problem", "rho1", "uniform")
    d = np.array([0, 0, 0, 1, 1, 0, 0, 0])  # p7 passes on seed 1 for both
    assert row["n_nonzero"] == 2 and row["delta"] == pytest.approx(d.mean())


def test_min_p_and_mde_at_a_reachable_n(tmp_path):
    seeds = range(7)
    for seed in seeds:
        make_run(tmp_path, "uniform", seed)
        make_run(tmp_path, "rho1", seed)
    path = write_report([tmp_path], tmp_path / "out")
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    row = next(r for r in data["results"] if r["metric"].startswith("validation loss") and r["variant"] == "rho1")
    d = np.array([final_loss("rho1", s) - final_loss("uniform", s) for s in seeds])
    assert row["min_p"] == pytest.approx(2 / 2**7) and row["detectable"]
    assert row["mde"] == pytest.approx(Z * d.std(ddof=1) / math.sqrt(7 * 3 / math.pi))
    assert "The by-seed tests (n = 7 pairs) can reach p < 0.05 (down to 2/2^7 = 0.0156)" in path.read_text()


# ---- the critic's signal -------------------------------------------------------------------------------------


def critic_eval(step: int, auc: float, low: float | None = None, high: float | None = None, **extra) -> dict:
    row = {"kind": "critic_eval", "step": step, "val_auc_last": auc, "val_value_loss": 0.2, **extra}
    if low is not None:
        row |= {"val_auc_ci_low": low, "val_auc_ci_high": high}
    return row


def test_critic_without_signal_puts_a_warning_at_the_top(tmp_path):
    make_run(tmp_path, "uniform", 0)
    make_run(tmp_path, "critic", 0, overrides=CRITIC, name="critic",  # stage 1 ended without signal
             extra_rows=(critic_eval(10, 0.62, 0.55, 0.70), critic_eval(20, 0.571, 0.466, 0.676)))
    make_run(tmp_path, "critic", 1, overrides=CRITIC, name="critic",
             extra_rows=(critic_eval(10, 0.5, 0.4, 0.6), critic_eval(20, 0.7, 0.61, 0.79)))  # recovered
    make_run(tmp_path, "shuffled", 0, overrides=SHUFFLED_CRITIC, name="shuffled-of-critic",
             extra_rows=(critic_eval(20, 0.66, 0.58, 0.74, signal=False),))  # the critic's own verdict
    path = write_report([tmp_path], tmp_path / "out")
    text = path.read_text()
    warning = "**WARNING: the critic learned no signal: its weights are noise.**"
    assert text.startswith(f"# wmtp report\n\n{warning}")
    first = text.split("\n\n")[1]
    assert str(tmp_path / "critic" / "seed0") in first and "AUC 0.571, 95% CI [0.466, 0.676]" in first
    assert str(tmp_path / "shuffled-of-critic" / "seed0") in first and "in 2 run(s)" in first
    assert str(tmp_path / "critic" / "seed1") not in first
    assert "<b>WARNING: the critic learned no signal" in (tmp_path / "out" / "report.html").read_text()
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [(f["variant"], f["seed"], f["ci_low"]) for f in data["critic_no_signal"]] == [
        ("critic", 0, 0.466), ("shuffled:critic", 0, 0.58)]


def test_no_warning_when_the_critic_has_signal_or_older_runs_lack_the_fields(tmp_path):
    make_run(tmp_path, "uniform", 0)
    make_run(tmp_path, "critic", 0, overrides=CRITIC, name="critic", extra_rows=(critic_eval(20, 0.7, 0.6, 0.8),))
    make_run(tmp_path, "critic", 1, overrides=CRITIC, name="critic", extra_rows=(critic_eval(20, 0.52),))  # older
    path = write_report([tmp_path], tmp_path / "out")
    assert "WARNING" not in path.read_text()
    assert json.loads((tmp_path / "out" / "report.json").read_text())["critic_no_signal"] == []


def test_critic_section_shows_each_runs_stage1_and_final_auc_with_its_ci(tmp_path):
    make_run(tmp_path, "uniform", 0)
    make_run(tmp_path, "critic", 0, overrides=CRITIC, name="critic",
             extra_rows=(critic_eval(10, 0.61, 0.52, 0.69),  # an earlier stage-1 validation: not the one shown
                         critic_eval(20, 0.708, 0.64, 0.775, val_loc_auc_neg_adv=0.619, val_loc_auc_abs_td=0.609),
                         {"kind": "eval", "step": 30, "val_loss": 1.0, "val_auc_last": 0.681, "val_auc_ci_low": 0.611,
                          "val_auc_ci_high": 0.752, "val_loc_auc_abs_td": 0.691}))
    text = write_report([tmp_path], tmp_path / "out").read_text()
    section = text.split("## Critic")[1].split("\n## ")[0]
    row = next(line for line in section.splitlines() if line.startswith("| critic | 0 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:6] == ["0.708 [0.64, 0.775]", "—", "0.619", "0.609"]
    assert cells[6:10] == ["0.681 [0.611, 0.752]", "—", "—", "0.691"]
    assert "| uniform |" not in section  # runs without a critic are not listed
    rows = json.loads((tmp_path / "out" / "report.json").read_text())["critic"]
    assert [(r["variant"], r["seed"], r["stage1_val_auc_last"], r["final_val_auc_ci_low"]) for r in rows] == [
        ("critic", 0, 0.708, 0.611)]


def test_no_critic_section_without_critic_runs(tmp_path):
    make_run(tmp_path, "uniform", 0)
    assert "## Critic" not in write_report([tmp_path], tmp_path / "out").read_text()
