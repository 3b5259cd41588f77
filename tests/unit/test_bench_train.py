"""wmtp.bench.train: the analytic FLOPs count and a tiny end-to-end run of the three subprocesses."""

from __future__ import annotations

import json
import math

import pytest

from wmtp.bench.train import VARIANTS, matmul_flops_per_token, run_train_bench


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
    return run_train_bench(vocab=512, seq=64, d_model=32, n_layers=2, n_heads=4, batch=1, steps=1, weighting="rho1")


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
