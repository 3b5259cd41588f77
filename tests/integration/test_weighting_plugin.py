"""A weighting defined entirely in this file: registered, then trained, swept (--methods, --grid on its own section)
and reported through the CLI, without touching a package file."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from wmtp.cli import app
from wmtp.config import ConfigError, load_config
from wmtp.train.run_dir import read_metrics
from wmtp.weighting import WeightFn, register_weighting

runner = CliRunner()
TINY = ["data.synthetic.n_problems=20", "data.vocab_size=300", "model.d_model=32", "model.n_layers=2",
        "model.n_attn_heads=2", "model.n_heads=2", "train.batch_size=4", "train.max_steps=4", "train.eval_every=2",
        "train.ckpt_every=4", "train.progress=false"]


@register_weighting("ce_power")
class CEPowerWeight(WeightFn):
    """w = ce^power on valid entries (harder tokens weigh more); logs the mean raw weight."""

    class Config(WeightFn.Config):
        power: float = 1.0

    needs_ce = True

    def begin_step(self, step: int) -> None:
        self._means: list[float] = []

    def weights(self, batch, valid, ce, outputs):
        w = torch.where(valid, ce.clamp(min=1e-6) ** self.cfg.power, 0.0)
        self._means.append(w[valid].mean().item())
        return w

    def stats(self) -> dict[str, float]:
        return {"ce_power_raw_mean": sum(self._means) / len(self._means)}


def test_registering_makes_its_name_and_section_valid():
    cfg = load_config(None, ["weighting.name=ce_power", "weighting.ce_power.power=2"])
    assert cfg.weighting.ce_power.power == 2.0
    for bad, message in (("weighting.ce_power.pwr=2", "allowed keys are power"),
                         ("weighting.name=ce_powr", "registered: ")):
        with pytest.raises(ConfigError, match=message):
            load_config(None, [bad])


def test_a_plugin_weighting_trains_sweeps_and_reports(tmp_path):
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["train", *TINY, cache, f"run_dir={run_dir}", "weighting.name=ce_power",
                                 "weighting.ce_power.power=2"])
    assert result.exit_code == 0, result.output
    train_rows = [r for r in read_metrics(run_dir) if r["kind"] == "train"]
    assert len(train_rows) == 4 and all(r["ce_power_raw_mean"] > 0 for r in train_rows)
    assert all(r["w_std"] > 0 for r in train_rows)  # not uniform: the plug-in's weights were used

    out = tmp_path / "sweep"
    result = runner.invoke(app, ["sweep", "--out", str(out), "--methods", "uniform,ce_power", "--seeds", "2",
                                 "--grid", "weighting.ce_power.power=1,3", "--workers", "1", "--no-evaluate",
                                 "--no-progress", cache, *TINY])
    assert result.exit_code == 0, result.output
    assert sorted(p.parent.name for p in out.glob("*/seed0")) == ["ce_power-power=1", "ce_power-power=3", "uniform"]

    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    labels = {v["label"]: v for v in report["variants"]}
    assert set(labels) == {"uniform", "ce_power (ce_power.power=1.0)", "ce_power (ce_power.power=3.0)"}
    assert labels["ce_power (ce_power.power=3.0)"]["baseline"] == "uniform"
    assert labels["ce_power (ce_power.power=3.0)"]["seeds"] == [0, 1]


def test_registration_refuses_what_a_section_cannot_hold():
    class Required(WeightFn):
        class Config(WeightFn.Config):
            power: float  # no default: a run that does not set it would have no section

        def weights(self, batch, valid, ce, outputs):
            return valid.float()

    with pytest.raises(TypeError, match="needs a default"):
        register_weighting("required_power")(Required)
    with pytest.raises(ValueError, match="already registered"):
        register_weighting("ce_power")(type("CEPowerWeight", (CEPowerWeight,), {"__module__": "elsewhere"}))


def test_every_weighting_error_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["weighting.ce_power.pwr=2", "weighting.normalize=bad", "weighting.name=nope"])
    message = str(err.value)
    assert "weighting.ce_power.pwr" in message and "weighting.normalize" in message and "'nope'" in message
