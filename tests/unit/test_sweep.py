"""Planning a sweep: one validated config per method × grid point × seed, ablation keys only where they apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from wmtp.config import ConfigError, config_hash
from wmtp.sweep import parse_grid, parse_seeds, plan_sweep


def test_parse_seeds_and_grid():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("4,1") == [4, 1]
    for bad in ("0", "a", "1,1"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)
    assert parse_grid(["weighting.rho1.temperature=0.5,2", "optim.lr=1e-3"]) == {
        "weighting.rho1.temperature": ["0.5", "2"], "optim.lr": ["1e-3"]}
    with pytest.raises(ConfigError, match="key.sub=v1,v2"):
        parse_grid(["weighting.rho1.temperature"])


def test_plan_crosses_methods_grid_and_seeds(tmp_path):
    grid = {"weighting.rho1.temperature": ["0.5", "2.0"], "weighting.critic.lam": ["0.9"]}
    plan = plan_sweep(None, ["train.max_steps=7"], out_dir=tmp_path, methods=["uniform", "rho1", "critic"],
                      seeds=[0, 1], grid=grid)
    names = [r.name for r in plan.runs]
    assert names == [f"{n}/seed{s}" for s in (0, 1) for n in
                     ("uniform", "rho1-temperature=0.5", "rho1-temperature=2.0", "critic-lam=0.9")]
    by_name = {r.name: r.cfg for r in plan.runs}
    assert by_name["rho1-temperature=2.0/seed1"].weighting.rho1.temperature == 2.0
    assert by_name["rho1-temperature=2.0/seed1"].seed == 1
    assert Path(by_name["rho1-temperature=0.5/seed0"].weighting.rho1.reference) == tmp_path / "reference"
    assert by_name["critic-lam=0.9/seed0"].weighting.critic.lam == 0.9
    assert by_name["critic-lam=0.9/seed0"].data.train_on == "all"
    for cfg in by_name.values():  # the same data split and step budget everywhere, each run in its own directory
        assert cfg.data.synthetic == plan.runs[0].cfg.data.synthetic and cfg.train.max_steps == 7
    assert len({cfg.run_dir for cfg in by_name.values()}) == len(by_name)
    # uniform differs between seeds only by the seed
    u0, u1 = by_name["uniform/seed0"], by_name["uniform/seed1"]
    assert config_hash(u0.model_copy(update={"seed": 1})) == config_hash(u1)
    ref = plan.reference
    assert ref is not None and ref.model.n_heads == 1 and ref.run_dir == str(tmp_path / "reference")


def test_plan_without_rho1_trains_no_reference_and_rejects_unused_grid(tmp_path):
    plan = plan_sweep(None, [], out_dir=tmp_path, methods=["uniform"], seeds=[0])
    assert plan.reference is None and [r.name for r in plan.runs] == ["uniform/seed0"]
    with pytest.raises(ConfigError, match="weighting.rho1.temperature: no method"):
        plan_sweep(None, [], out_dir=tmp_path, methods=["uniform"], seeds=[0],
                   grid={"weighting.rho1.temperature": ["2"]})
    with pytest.raises(ConfigError, match="unknown key"):
        plan_sweep(None, ["train.nonsense=1"], out_dir=tmp_path, methods=["uniform"], seeds=[0])


def test_base_model_is_planned_first_and_every_run_starts_from_it(tmp_path):
    plan = plan_sweep(None, ["train.max_steps=7"], out_dir=tmp_path, methods=["uniform", "critic"], seeds=[0, 1],
                      base_steps=3)
    assert plan.base is not None and plan.base.train.max_steps == 3 and plan.base.weighting.name == "uniform"
    assert plan.base.run_dir == str(tmp_path / "base")
    for run in plan.runs:
        assert run.cfg.model.init_from == str(tmp_path / "base" / "model") and run.cfg.train.max_steps == 7
    assert plan_sweep(None, [], out_dir=tmp_path, methods=["uniform"], seeds=[0]).base is None
    with pytest.raises(ConfigError, match="--base-steps"):
        plan_sweep(None, ["model.init_from=elsewhere"], out_dir=tmp_path, methods=["uniform"], seeds=[0], base_steps=3)
