"""The memory estimate of the one-pass step (local weights: every head block's activations held at once)."""

import dataclasses
import random

from test_memory import make_trainer, measured_peak

from wmtp.config import WeightingConfig
from wmtp.train.memory import estimate_memory
from wmtp.weighting.rho1 import Rho1Config, Rho1Weight


def test_one_pass_estimate_within_30_percent_of_measured_peak(tmp_path):
    trainer = make_trainer(tmp_path, "model.d_model=64", "model.n_layers=2", "data.max_len=64", "train.batch_size=8",
                           "weighting.name=rho1")  # fmt: skip
    uniform_cfg = trainer.cfg.model_copy(update={"weighting": WeightingConfig()})
    uniform_estimate = estimate_memory(trainer.model, uniform_cfg).peak
    rng = random.Random(1)
    trainer.train_data = [dataclasses.replace(r, ref_ce=[rng.uniform(0, 5) for _ in r.input_ids])
                          for r in trainer.train_data]  # fmt: skip
    trainer.weight_fn = Rho1Weight(Rho1Config())
    estimate = estimate_memory(trainer.model, trainer.cfg).peak
    measured = measured_peak(trainer)
    assert estimate > uniform_estimate  # the one pass holds more
    assert abs(estimate - measured) <= 0.3 * measured, (estimate, measured)
