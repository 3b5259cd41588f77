"""Rho-1 end to end on a tiny model: a next-token reference, `wmtp score-ref`, training from the cache (or on
the fly), stale caches and tokenizer mismatches refused, HF references scored like their own logits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM
from typer.testing import CliRunner

from wmtp.cli import app
from wmtp.config import ConfigError, load_config
from wmtp.data.collate import encode_records
from wmtp.data.dataset import prepare_data
from wmtp.data.tokenizer import load_tokenizer
from wmtp.model.checkpoints import load_model_dir, save_model_dir
from wmtp.train.run import build_run, train_run
from wmtp.train.run_dir import read_metrics
from wmtp.weighting.ref_cache import RefCacheError, read_cache
from wmtp.weighting.reference import ReferenceScorer, TokenizerMismatchError, resolve_reference
from wmtp.weighting.reference_scores import reference_cache_key, score_reference

runner = CliRunner()


def common(root: Path) -> list[str]:
    return [
        f"data.cache_dir={root}/cache",
        "data.synthetic.n_problems=20",
        "data.vocab_size=300",
        "model.d_model=32",
        "model.n_layers=2",
        "model.n_attn_heads=2",
        "model.n_heads=3",
        "model.max_seq_len=256",
        "train.batch_size=4",
        "train.max_steps=3",
        "train.eval_every=2",
        "train.eval_batches=1",
        "train.progress=false",
        "train.ce_chunk_tokens=64",
        "weighting.rho1.shard_records=16",
    ]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A reference made as Rho-1 does: a next-token model (H=1) trained on the correct solutions."""
    root = tmp_path_factory.mktemp("rho1")
    train_run(load_config(None, [*common(root), f"run_dir={root}/ref", "model.n_heads=1", "data.train_on=correct"]))
    return root


def rho1_cfg(root: Path, *overrides: str):
    return load_config(None, [*common(root), f"weighting.rho1.reference={root}/ref", "weighting.name=rho1", *overrides])


def direct_ref_ce(model, ids: list[int]) -> list[float]:
    """CE of token j given x_<j from the model's full logits, one unpadded sequence at a time."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    return [0.0] + F.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="none").tolist()


def test_score_ref_cli_writes_the_reference_ce(root):
    args = ["score-ref", *common(root), f"weighting.rho1.reference={root}/ref"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "reference cache" in first.output and "0 reused" in first.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 shards scored" in again.output

    cfg = rho1_cfg(root)
    data = prepare_data(cfg.data)
    records = encode_records(data.train + data.valid, data.tokenizer, cfg.data.max_len)
    directory, key = reference_cache_key(cfg, data, records, resolve_reference(f"{root}/ref"))
    values = read_cache(directory, key, records)
    reference = load_model_dir(root / "ref" / "model")
    for record, row in zip(records[:6], values[:6]):
        assert row == pytest.approx(direct_ref_ce(reference.trunk, record.input_ids), abs=2e-4)


def test_rho1_trains_from_the_cache_and_on_the_fly(root):
    score_reference(rho1_cfg(root))
    cfg = rho1_cfg(root, f"run_dir={root}/rho1")
    train_run(cfg)
    rows = read_metrics(root / "rho1")
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 3]
    for r in train_rows:
        assert {f"excess_h{k}" for k in (1, 2, 3)} <= r.keys()
        assert {"w_mean", "w_std", "w_max", "w_entropy", "w_frac_zero"} <= r.keys()
        assert r["w_std"] > 0  # not uniform
    hists = [r for r in rows if r["kind"] == "weights_hist"]
    assert [h["step"] for h in hists] == [2, 3]
    assert len(hists[0]["edges"]) == len(hists[0]["counts_h1"]) + 1 and sum(hists[0]["counts_h1"]) > 0
    meta = json.loads((root / "rho1" / "meta.json").read_text())
    assert meta["reference"]["identity"].startswith("wmtp:") and meta["reference"]["cache"]["key"]

    fly = rho1_cfg(root, f"run_dir={root}/rho1-fly", "weighting.rho1.ref_on_the_fly=true", "train.max_steps=1")
    fly_row = build_run(fly).trainer.train_step()
    assert fly_row["loss"] == pytest.approx(train_rows[0]["loss"], rel=1e-5)
    assert fly_row["excess_h2"] == pytest.approx(train_rows[0]["excess_h2"], rel=1e-4)


@pytest.mark.parametrize("control", ["shuffled", "random"])
def test_controls_train_on_the_valid_entries_of_uniform(root, control):
    score_reference(rho1_cfg(root))
    ctrl = build_run(rho1_cfg(root, f"run_dir={root}/{control}", f"weighting.name={control}")).trainer
    uni = build_run(load_config(None, [*common(root), f"run_dir={root}/{control}-uniform"])).trainer
    assert ctrl.train_data[0].ref_ce is not None
    row_ctrl, row_uni = ctrl.train_step(), uni.train_step()
    assert row_ctrl["ce_h1"] == pytest.approx(row_uni["ce_h1"]) and "excess_h1" in row_ctrl  # same tokens, same init
    assert row_ctrl["w_mean"] == pytest.approx(1.0) and row_ctrl["w_std"] > 0


def test_stale_cache_is_refused_naming_the_key(root):
    score_reference(rho1_cfg(root))
    build_run(rho1_cfg(root, f"run_dir={root}/ok"))  # the fresh cache is accepted

    changed_data = rho1_cfg(root, f"run_dir={root}/stale-data", "data.max_len=200")
    with pytest.raises(RefCacheError, match=r"no reference-CE cache for key \w{16}.*score-ref.*differs in data"):
        build_run(changed_data)

    other = load_model_dir(root / "ref" / "model")
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    save_model_dir(other, root / "ref2" / "model", load_tokenizer(root / "ref" / "tokenizer"))
    changed_ref = rho1_cfg(root, f"run_dir={root}/stale-ref", f"weighting.rho1.reference={root}/ref2")
    with pytest.raises(RefCacheError, match="differs in reference"):
        build_run(changed_ref)


def test_tokenizer_mismatch_is_refused_in_score_ref_and_training(root):
    tok = load_tokenizer(root / "ref" / "tokenizer")
    extra = root / "ref-extra"
    shutil.copytree(root / "ref", extra, dirs_exist_ok=True)
    grown = load_tokenizer(root / "ref" / "tokenizer")
    grown.add_tokens(["<|extra|>"])
    grown.save_pretrained(str(extra / "model" / "tokenizer"))
    cfg = rho1_cfg(root, f"weighting.rho1.reference={extra}", f"run_dir={root}/mismatch")
    for action in (score_reference, build_run):
        with pytest.raises(TokenizerMismatchError, match=r"vocab size 300 vs 301.*'<\|extra\|>' has id None vs 300"):
            action(cfg)

    special = root / "ref-special"
    shutil.copytree(root / "ref", special, dirs_exist_ok=True)
    changed = load_tokenizer(root / "ref" / "tokenizer")
    changed.eos_token = tok.pad_token
    changed.save_pretrained(str(special / "model" / "tokenizer"))
    cfg = rho1_cfg(root, f"weighting.rho1.reference={special}")
    with pytest.raises(TokenizerMismatchError, match=r"eos_token '<\|eos\|>' \(id 2\) vs '<\|pad\|>' \(id 0\)"):
        score_reference(cfg)

    policy_changed = rho1_cfg(root, "data.vocab_size=320", f"run_dir={root}/mismatch2")
    with pytest.raises(TokenizerMismatchError, match="vocab size 320 vs 300"):
        build_run(policy_changed)


def test_hf_reference_directory_and_generic_models(root):
    tok = load_tokenizer(root / "ref" / "tokenizer")
    hf_dir = root / "hf-ref"
    config = AutoConfig.for_model(
        "llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
    )  # fmt: skip
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(hf_dir))
    tok.save_pretrained(str(hf_dir))
    cfg = rho1_cfg(root, f"weighting.rho1.reference={hf_dir}")
    directory, done = score_reference(cfg)
    assert done["skipped"] == [] and "hf-dir" not in directory.name
    data = prepare_data(cfg.data)
    records = encode_records(data.train + data.valid, data.tokenizer, cfg.data.max_len)
    source = resolve_reference(str(hf_dir))
    assert source.kind == "hf-dir"
    values = read_cache(*reference_cache_key(cfg, data, records, source), records)
    hf = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    for record, row in zip(records[:4], values[:4]):
        assert row == pytest.approx(direct_ref_ce(hf, record.input_ids), abs=2e-4)

    # a causal LM outside the Llama family is scored through its full logits, padding included
    gpt2 = AutoModelForCausalLM.from_config(
        AutoConfig.for_model("gpt2", vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=256)
    )
    ids = [records[0].input_ids, records[1].input_ids]
    T = max(map(len, ids))
    batch = torch.tensor([x + [0] * (T - len(x)) for x in ids])
    mask = torch.tensor([[True] * len(x) + [False] * (T - len(x)) for x in ids])
    ref = ReferenceScorer(gpt2)(batch, mask)
    for b, x in enumerate(ids):
        assert ref[b, : len(x)].tolist() == pytest.approx(direct_ref_ce(gpt2, x), abs=2e-4)
        assert torch.all(ref[b, len(x) :] == 0)


def test_missing_reference_is_a_config_error(root, tmp_path):
    cfg = load_config(None, [*common(root), "weighting.name=rho1", f"run_dir={tmp_path}/r"])
    with pytest.raises(ConfigError, match="weighting.rho1.reference"):
        build_run(cfg)
    result = runner.invoke(app, ["score-ref", *common(root), f"weighting.rho1.reference={tmp_path}/nowhere"])
    assert result.exit_code == 2 and f"{tmp_path}/nowhere" in result.output and "Traceback" not in result.output


def test_a_control_run_resumes_exactly(tmp_path):
    """The shuffled control draws from (seed, step, micro-batch): a killed and resumed run equals an
    uninterrupted one, metrics (weights and their histograms included) and parameters."""
    import random

    from wmtp.data.collate import EncodedRecord
    from wmtp.model.mtp import MTPModel
    from wmtp.train.trainer import Trainer
    from wmtp.registry import build_weight_fn
    from wmtp.weighting.base import WeightFn

    rng = random.Random(0)
    records = []
    for i in range(24):
        n = rng.randint(8, 16)
        ids = [1] + [rng.randint(3, 60) for _ in range(n - 2)] + [2]
        ref_ce = [0.0] + [rng.uniform(0, 4) for _ in ids[1:]]
        records.append(EncodedRecord(f"r{i}", ids, rng.randint(1, n - 3), True, ref_ce))

    class Killed(Exception):
        pass

    class DiesAtStep(WeightFn):
        """The control, killed as optimizer step `kill_at` (0-based) begins."""

        def __init__(self, fn, kill_at):
            self.fn, self.kill_at, self.needs_ce = fn, kill_at, fn.needs_ce

        def begin_step(self, step):
            if step == self.kill_at:
                raise Killed
            self.fn.begin_step(step)

        def weights(self, batch, valid, ce, outputs):
            return self.fn.weights(batch, valid, ce, outputs)

        def stats(self):
            return self.fn.stats()

    def make(run_dir, kill_at=None):
        cfg = load_config(None, [
            f"run_dir={run_dir}", "model.d_model=32", "model.n_layers=2", "model.n_heads=3", "model.n_attn_heads=4",
            "train.batch_size=4", "train.grad_accum=2", "train.max_steps=3", "train.eval_every=2", "train.ckpt_every=2",
            "train.progress=false", "weighting.name=shuffled", "weighting.rho1.reference=unused",
        ])  # fmt: skip
        torch.manual_seed(cfg.seed)
        model = MTPModel.from_config(cfg.model, vocab_size=61, pad_id=0, bos_id=1, eos_id=2)
        fn = build_weight_fn(cfg.weighting, seed=cfg.seed)
        if kill_at is not None:
            fn = DiesAtStep(fn, kill_at)
        return Trainer(cfg, model=model, weight_fn=fn, train_data=records, valid_data=records[:8], pad_id=0,
                       run_dir=Path(run_dir))  # fmt: skip

    full = make(tmp_path / "full")
    full.train()
    crashing = make(tmp_path / "resumed", kill_at=2)  # checkpoint after step 2, killed as step 3 begins
    with pytest.raises(Killed):
        crashing.train()
    resumed = make(tmp_path / "resumed")
    assert resumed.resume() and resumed.step == 2
    resumed.train()

    def rows(run_dir):
        timing = {"tokens_per_s", "step_s", "peak_mem_mb"}
        return [{k: v for k, v in r.items() if k not in timing} for r in read_metrics(run_dir)]

    assert rows(tmp_path / "resumed") == rows(tmp_path / "full")
    assert any(r["kind"] == "weights_hist" for r in rows(tmp_path / "full"))
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
