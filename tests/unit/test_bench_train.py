"""wmtp.bench.train and its worker: the analytic FLOPs count, a tiny end-to-end run of the worker processes (the
JSON schema: raw times per round, their summaries, ratios with their spread), the worker's step in-process
(grad-accum micro-batches, the critic's value loss) and the CLI's options. No timed assertions."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch

from wmtp.train import step as step_module
from wmtp.bench.train import VARIANTS, WARMUP_STEPS, matmul_flops_per_token, run_train_bench
from wmtp.bench.train_worker import Variant, naive_step, serve, trainer_step

ROUNDS, STEPS = 2, 2
TINY = dict(vocab=512, seq=64, d_model=32, n_layers=2, n_heads=4, batch=1)


def test_matmul_flops_per_token_by_hand():
    # D=8, 2 attention heads (hs=4), 1 kv head (GQA), d_ff=16, V=10, T=6, 2 blocks, 1 unembedding.
    # block matmul params: q 8·8=64, k,v 2·8·(1·4)=64, o 8·8=64, MLP 3·8·16=384 → 576
    # block forward: 2·576 + (2·2·6·8)/2 = 1152 + 96 = 1248; unembedding 2·10·8 = 160
    # training = 3 · (2·1248 + 160) = 3 · 2656 = 7968
    got = matmul_flops_per_token(
        d_model=8, d_ff=16, n_attn_heads=2, n_kv_heads=1, vocab=10, seq=6, n_blocks=2, n_unembed=1
    )
    assert got == 7968


def test_flops_ratio_grows_with_heads():
    shape = dict(d_model=256, d_ff=1024, n_attn_heads=4, n_kv_heads=4, vocab=32000, seq=1024)
    ntp = matmul_flops_per_token(**shape, n_blocks=4, n_unembed=1)
    mtp = matmul_flops_per_token(**shape, n_blocks=7, n_unembed=4)
    assert 1 < mtp / ntp < 4  # at most H× (every extra head costs at most one block + one unembedding)


@pytest.fixture(scope="module")
def tiny_result():
    return run_train_bench(**TINY, steps=STEPS, rounds=ROUNDS, weighting="rho1")


def test_run_train_bench_tiny_keys_and_ratios(tiny_result):
    r = tiny_result
    json.dumps(r)  # JSON-able
    for name in VARIANTS:
        for key in ("step_s", "step_cpu_s", "peak_mem_mb", "param_mb", "tensor_peak_mb", "rss_import_mb"):
            assert r[name][key] > 0, (name, key, r[name][key])
    assert r["ntp"]["n_heads"] == 1 and r["mtp"]["n_heads"] == r["naive_mtp"]["n_heads"] == 4
    for key in ("time_ratio", "flops_ratio", "mem_ratio", "extra_state_mb", "naive_time_ratio"):
        assert r[key] > 0, key
    for key in ("extra_mem_mb", "naive_extra_mem_mb"):
        assert math.isfinite(r[key])
    assert r["time_ratio"] == pytest.approx(r["mtp"]["step_s"] / r["ntp"]["step_s"])
    assert r["cpu_time_ratio"] == pytest.approx(r["mtp"]["step_cpu_s"] / r["ntp"]["step_cpu_s"])
    assert r["naive_time_ratio"] == pytest.approx(r["naive_mtp"]["step_s"] / r["ntp"]["step_s"])
    assert r["mem_ratio"] == pytest.approx(r["mtp"]["peak_mem_mb"] / r["ntp"]["peak_mem_mb"])
    assert r["extra_mem_mb"] == pytest.approx(r["mtp"]["peak_mem_mb"] - r["ntp"]["peak_mem_mb"])
    extra_params = r["mtp"]["n_params"] - r["ntp"]["n_params"]
    assert extra_params == r["config"]["extra_params"] > 0
    assert r["extra_state_mb"] == pytest.approx(16 * extra_params / 2**20)
    assert r["time_goal_met"] == (r["time_ratio"] <= r["flops_ratio"])
    assert r["mem_goal_met"] == (r["extra_mem_mb"] <= r["extra_state_mb"] + 0.10 * r["ntp"]["peak_mem_mb"])
    assert r["config"]["seq"] == 64 and r["config"]["vocab"] == 512


def test_ours_and_naive_compute_the_same_loss(tiny_result):
    # same seed → same H=4 model and batch: the first step's uniform MTP loss must agree
    assert tiny_result["mtp"]["loss_first"] == pytest.approx(tiny_result["naive_mtp"]["loss_first"], rel=1e-4)


def test_weighted_variant_is_timed_against_uniform(tiny_result):
    r = tiny_result
    assert r["weighting"] == "rho1" and r["mtp_rho1"]["n_heads"] == 4
    assert r["weighting_time_ratio"] == pytest.approx(r["mtp_rho1"]["step_s"] / r["mtp"]["step_s"])
    assert r["mtp_rho1"]["loss_first"] != pytest.approx(r["mtp"]["loss_first"])  # rho1 weights do change the loss


def test_json_keeps_raw_times_per_round_and_their_spread(tiny_result):
    r = tiny_result
    for name in (*VARIANTS, "mtp_rho1"):
        v = r[name]
        for key in ("step_s", "step_cpu_s"):
            rounds = v[f"{key}_rounds"]
            assert len(rounds) == ROUNDS and all(len(block) == STEPS for block in rounds)
            assert v[f"{key}_all"] == [t for block in rounds for t in block]
            assert v[key] == statistics.median(v[f"{key}_all"])
            stats = v[f"{key}_stats"]
            assert stats["n"] == ROUNDS * STEPS and stats["min"] <= stats["q1"] <= stats["median"] <= stats["q3"]
            assert stats["q3"] <= stats["max"] and stats["min"] == min(v[f"{key}_all"])
    for key, num, den, times in (("time_ratio", "mtp", "ntp", "step_s"), ("cpu_time_ratio", "mtp", "ntp", "step_cpu_s"),
                                 ("naive_time_ratio", "naive_mtp", "ntp", "step_s"),
                                 ("weighting_time_ratio", "mtp_rho1", "mtp", "step_s"),
                                 ("weighting_cpu_time_ratio", "mtp_rho1", "mtp", "step_cpu_s")):  # fmt: skip
        stats = r[f"{key}_stats"]
        assert stats["ratio"] == r[key]
        assert stats["ratio_min"] == pytest.approx(min(r[num][f"{times}_all"]) / min(r[den][f"{times}_all"]))
        first = statistics.median(r[num][f"{times}_rounds"][0]) / statistics.median(r[den][f"{times}_rounds"][0])
        assert len(stats["rounds"]) == ROUNDS and stats["rounds"][0] == pytest.approx(first)
        assert stats["rounds_min"] <= stats["rounds_q1"] <= stats["rounds_q3"] <= stats["rounds_max"]
    c = r["config"]
    assert (c["rounds"], c["steps"], c["grad_accum"], c["warmup_steps"]) == (ROUNDS, STEPS, 1, WARMUP_STEPS)
    assert c["round_orders"] == [["ntp", "mtp", "naive_mtp", "mtp_rho1"], ["mtp", "naive_mtp", "mtp_rho1", "ntp"]]
    assert len(c["loadavg_1m_rounds"]) == ROUNDS + 1 and c["loadavg_1m"] == [c["loadavg_1m_rounds"][0],
                                                                               c["loadavg_1m_rounds"][-1]]


def test_a_bad_option_fails_before_any_worker():
    with pytest.raises(ValueError, match="unknown weighting 'nope'"):
        run_train_bench(**TINY, weighting="nope")
    with pytest.raises(ValueError, match="grad_accum must be at least 1, got 0"):
        run_train_bench(**TINY, grad_accum=0)


# ---- the worker, in this process ---------------------------------------------------------------------


def params(**changes):
    return {**TINY, "grad_accum": 1, "seed": 0, "threads": 1, "mode": "ours", "weighting": "uniform",
            "warmup_steps": 1, **changes}  # fmt: skip


def count_calls(monkeypatch, name):
    """Calls of wmtp.train.step.<name> (the functions step_gradients runs), each recorded by its raw_weights."""
    calls = []
    original = getattr(step_module, name)

    def counted(*args, **kwargs):
        calls.append(kwargs.get("raw_weights"))
        return original(*args, **kwargs)

    monkeypatch.setattr(step_module, name, counted)
    return calls


@pytest.mark.parametrize("weighting, raw_first", [("uniform", True), ("rho1", False)])
def test_grad_accum_runs_every_micro_batch_through_the_trainers_path(monkeypatch, weighting, raw_first):
    """Two passes (uniform): every raw weight of the step first; one pass (rho1's local weights): no no-grad pass."""
    variant = Variant(params(grad_accum=3, weighting=weighting))
    assert len(variant.micro) == 3
    raw_calls, fb_calls = count_calls(monkeypatch, "raw_step_weights"), count_calls(monkeypatch, "forward_backward")
    variant.timed(2)
    assert len(fb_calls) == 6  # 3 micro-batches × 2 optimizer steps
    assert len(raw_calls) == (6 if raw_first else 0)
    assert all((raw is not None) == raw_first for raw in fb_calls)  # given the raw weights computed first, or not
    one = Variant(params(weighting=weighting))
    raw_calls.clear(), fb_calls.clear()
    one.step()
    assert raw_calls == [] and fb_calls == [None]  # one micro-batch: the weights come from the shared trunk forward


def test_ours_and_naive_agree_under_grad_accum():
    ours, naive = Variant(params(grad_accum=2)), Variant(params(grad_accum=2, mode="naive"))
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(ours.micro, naive.micro))
    assert trainer_step(ours.model, ours.optimizer, ours.micro, ours.weight_fn, wcfg=ours.wcfg, step=0) == pytest.approx(
        naive_step(naive.model, naive.optimizer, naive.micro), rel=1e-4
    )


def test_critic_variant_runs_the_value_loss(monkeypatch):
    variant = Variant(params(grad_accum=2, weighting="critic"))
    value_head = variant.model.value_head
    before = [p.detach().clone() for p in value_head.parameters()]
    calls = []
    aux_loss = variant.weight_fn.aux_loss

    def counted(batch, outputs, *, n_tokens):
        loss, metrics = aux_loss(batch, outputs, n_tokens=n_tokens)
        calls.append(metrics["value_loss"])
        return loss, metrics

    monkeypatch.setattr(variant.weight_fn, "aux_loss", counted)
    variant.step()
    assert len(calls) == 2 and all(math.isfinite(v) and v > 0 for v in calls)  # once per micro-batch
    # the value head learns from the value loss alone (the MTP loss's weights are detached)
    assert any(not torch.equal(b, p) for b, p in zip(before, value_head.parameters()))


def test_serve_answers_run_and_finish_requests():
    replies = []
    requests = [json.dumps({"run": 3}), json.dumps({"finish": 1}), json.dumps({"run": 1})]
    serve(params(), iter(requests), replies.append)
    assert len(replies) == 3  # ready, run, finish; nothing after finish
    assert replies[0] == {"ready": True}
    assert len(replies[1]["times"]) == len(replies[1]["cpu_times"]) == len(replies[1]["losses"]) == 3
    assert replies[2]["n_heads"] == 4 and replies[2]["peak_mem_mb"] > 0
    with pytest.raises(ValueError, match="unknown request"):
        serve(params(), iter([json.dumps({"walk": 1})]), replies.append)


def test_the_cli_passes_its_options(monkeypatch):
    from typer.testing import CliRunner

    from wmtp.bench import train as bench_train
    from wmtp.cli import app

    seen = {}
    monkeypatch.setattr(bench_train, "run_train_bench", lambda **kw: seen.update(kw) or {"ok": True})
    args = ["bench", "train", "--weighting", "critic", "--grad-accum", "4", "--rounds", "3", "--steps", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1]) == {"ok": True}
    assert (seen["weighting"], seen["grad_accum"], seen["rounds"], seen["steps"]) == ("critic", 4, 3, 1)
    assert CliRunner().invoke(app, ["bench", "train", "--grad-accum", "0"]).exit_code == 2
    monkeypatch.undo()  # the real run_train_bench refuses the name before it starts any worker
    refused = CliRunner().invoke(app, ["bench", "train", "--weighting", "nope"])
    assert refused.exit_code == 2 and "unknown weighting" in refused.output
