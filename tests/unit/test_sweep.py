"""Planning a sweep: one validated config per method × grid point × seed, ablation keys only where they apply."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wmtp.config import ConfigError, config_hash
from wmtp.sweep import parse_grid, parse_method, parse_methods, parse_seeds, plan_sweep


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


def test_method_specs_parse_to_overrides_and_names():
    specs = {s.text: s for s in parse_methods(["uniform", "critic", "shuffled:critic", "uniform@all", "random:rho1",
                                               "rho1@all"], default_control_of="critic")}
    assert list(specs) == ["uniform", "critic", "shuffled:critic", "uniform@all", "random:rho1", "rho1@all"]
    assert [s.text for s in parse_methods(["shuffled"], default_control_of="rho1")] == ["shuffled:rho1"]  # bare
    assert specs["shuffled:critic"].overrides() == ["weighting.name=shuffled", "weighting.control_of=critic",
                                                    "data.train_on=all"]
    assert specs["shuffled:critic"].dir_name == "shuffled-of-critic"
    assert specs["uniform@all"].overrides() == ["weighting.name=uniform", "data.train_on=all"]
    assert specs["uniform@all"].dir_name == "uniform-on-all"
    assert specs["critic"].overrides() == ["weighting.name=critic", "data.train_on=all"]
    assert specs["random:rho1"].overrides() == ["weighting.name=random", "weighting.control_of=rho1"]
    assert specs["rho1@all"].overrides() == ["weighting.name=rho1", "data.train_on=all"]
    assert specs["uniform"].overrides() == ["weighting.name=uniform"] and specs["uniform"].dir_name == "uniform"
    assert parse_method("critic@all", default_control_of="rho1").text == "critic"  # its own data: nothing to add


@pytest.mark.parametrize("item,message", [
    ("nope", "'nope' is not a registered weighting; registered: "),
    ("shuffled:nope", "'nope' is not a registered weighting"),
    ("critic:rho1", "critic is not a control; before ':' comes a control"),
    ("shuffled:random", "random is itself a control"),
    ("uniform@some", "@some is not a data.train_on value; use @correct or @all"),
    ("critic@correct", "critic learns from data.train_on=all records; drop @correct"),
    ("shuffled:critic@correct", "shuffled:critic learns from data.train_on=all records"),
    ("shuffled:", "give WEIGHTING, CONTROL:WEIGHTING"),
    ("@all", "give WEIGHTING"),
    ("uniform@", "give WEIGHTING"),
    ("a:b:c", "give WEIGHTING"),
])
def test_bad_method_specs_say_what_is_wrong(item, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_method(item, default_control_of="rho1")


def test_repeated_or_no_methods_are_refused():
    with pytest.raises(ConfigError, match="critic more than once"):
        parse_methods(["critic", "critic@all"])
    with pytest.raises(ConfigError, match="--methods is empty"):
        parse_methods([])


def test_plan_with_controls_and_data_matched_uniform(tmp_path):
    methods = ["uniform", "critic", "rho1", "shuffled:critic", "shuffled:rho1", "uniform@all"]
    plan = plan_sweep(None, ["train.max_steps=7"], out_dir=tmp_path, methods=methods, seeds=[0, 1], base_steps=3,
                      grid={"weighting.critic.lam": ["0.9"]})
    by_name = {r.name: r for r in plan.runs}
    assert list(by_name) == [f"{n}/seed{s}" for s in (0, 1) for n in (
        "uniform", "critic-lam=0.9", "rho1", "shuffled-of-critic-lam=0.9", "shuffled-of-rho1", "uniform-on-all")]
    shuffled_critic = by_name["shuffled-of-critic-lam=0.9/seed1"]
    assert shuffled_critic.method == "shuffled:critic" and shuffled_critic.seed == 1
    cfg = shuffled_critic.cfg
    assert (cfg.weighting.name, cfg.weighting.control_of, cfg.data.train_on) == ("shuffled", "critic", "all")
    assert cfg.weighting.critic.lam == 0.9  # the critic's grid key varies its control too
    cfg = by_name["shuffled-of-rho1/seed0"].cfg
    assert (cfg.weighting.name, cfg.weighting.control_of, cfg.data.train_on) == ("shuffled", "rho1", "correct")
    assert Path(cfg.weighting.rho1.reference) == tmp_path / "reference"
    cfg = by_name["uniform-on-all/seed0"].cfg
    assert (cfg.weighting.name, cfg.data.train_on) == ("uniform", "all") and by_name["uniform-on-all/seed0"].method \
        == "uniform@all"
    assert by_name["uniform/seed0"].cfg.data.train_on == "correct"
    for run in plan.runs:  # every method fine-tunes the one base, on the same split and budget
        assert run.cfg.model.init_from == str(tmp_path / "base" / "model") and run.cfg.train.max_steps == 7
        assert run.cfg.data.synthetic == plan.runs[0].cfg.data.synthetic
        assert run.cfg.run_dir == str(tmp_path / run.name)
    with pytest.raises(ConfigError, match="critic is not a control"):
        plan_sweep(None, [], out_dir=tmp_path, methods=["critic:rho1"], seeds=[0])
