"""hybrid [critic, rho1] and gradnorm end to end on a tiny model: a next-token reference, `wmtp score-ref` through
the hybrid's rho1 section, the critic's two stages, both components' metrics, a resume continuing exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from wmtp.cli import app
from wmtp.config import load_config
from wmtp.train.run import train_run
from wmtp.train.run_dir import read_metrics
from wmtp.weighting.hybrid import HybridWeight
from wmtp.weighting.rho1 import Rho1Weight

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def common(root: Path) -> list[str]:
    return [
        f"data.cache_dir={root}/cache", "data.synthetic.n_problems=20", "data.vocab_size=300", "model.d_model=32",
        "model.n_layers=2", "model.n_attn_heads=2", "model.n_heads=3", "model.max_seq_len=256",
        "train.batch_size=4", "train.max_steps=4", "train.eval_every=2", "train.eval_batches=1",
        "train.ckpt_every=2", "train.progress=false", "train.ce_chunk_tokens=64", "weighting.rho1.shard_records=16",
    ]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A next-token reference (H=1) trained on the correct solutions, as the sweep trains it."""
    root = tmp_path_factory.mktemp("hybrid")
    train_run(load_config(None, [*common(root), f"run_dir={root}/ref", "model.n_heads=1", "data.train_on=correct",
                                 "train.max_steps=3"]))
    return root


def hybrid_args(root: Path, run: str, *extra: str) -> list[str]:
    return [*common(root), f"run_dir={root}/{run}", "weighting.name=hybrid", "data.train_on=all",
            f"weighting.rho1.reference={root}/ref", "weighting.critic.pretrain_epochs=0.1",
            "weighting.critic.value_head=mlp", *extra]


def test_hybrid_of_critic_and_rho1_trains_both_components(root):
    scored = runner.invoke(app, ["score-ref", *hybrid_args(root, "unused")])
    assert scored.exit_code == 0, scored.output  # the hybrid's rho1 section names the reference to score
    run = train_run(load_config(None, hybrid_args(root, "run")))
    h = run.trainer.weight_fn
    assert isinstance(h, HybridWeight) and [c.name for c in h.parts] == ["critic", "rho1"]
    rows = read_metrics(root / "run")
    kinds = [r["kind"] for r in rows]
    assert kinds.count("critic_train") == h.parts[0].stage_steps > 0 and kinds.count("train") == 4
    assert kinds.index("critic_train") < kinds.index("train")  # the critic's stage 1 ran first
    train = [r for r in rows if r["kind"] == "train"]
    for row in train:  # the critic's stats and aux loss, rho1's stats, and weights that are not uniform
        assert {"adv_mean", "value_loss", "excess_h1", "excess_h3"} <= set(row) and row["w_std"] > 0
    evaluation = next(r for r in rows if r["kind"] == "eval")
    assert {"val_auc_last", "val_value_loss"} <= set(evaluation)
    assert set(h.state_dict()) == {"critic", "rho1"} and h.state_dict()["critic"]["stage_step"] > 0


def test_hybrid_resumes_exactly(root, monkeypatch):
    def comparable(run_dir: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k in ("kind", "step", "loss", "value_loss", "excess_h1", "w_std")}
                for r in read_metrics(run_dir) if r["kind"] in ("train", "critic_train")]

    def cfg(run: str):
        return load_config(None, hybrid_args(root, run, "weighting.hybrid.mode=mean", "weighting.rho1.ref_on_the_fly=true"))

    train_run(cfg("full"))
    weights, calls = Rho1Weight.weights, []

    def killed_at_step_3(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated kill")
        return weights(self, *args)

    monkeypatch.setattr(Rho1Weight, "weights", killed_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg("resumed"))
    monkeypatch.setattr(Rho1Weight, "weights", weights)
    train_run(cfg("resumed"), resume=True)
    full, resumed = comparable(root / "full"), comparable(root / "resumed")
    assert [r["step"] for r in resumed if r["kind"] == "train"] == [1, 2, 3, 4]
    assert resumed == full


def test_gradnorm_trains_from_the_steps_norms(root):
    run_dir = root / "gradnorm"
    train_run(load_config(None, [*common(root), f"run_dir={run_dir}", "weighting.name=gradnorm",
                                 "weighting.gradnorm.power=2"]))
    train = [r for r in read_metrics(run_dir) if r["kind"] == "train"]
    assert len(train) == 4 and all(r["w_std"] > 0 for r in train)
