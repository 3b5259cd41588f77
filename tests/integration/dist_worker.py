"""Run under torchrun by test_distributed.py: the trainer of test_trainer.py on 2 ranks (FSDP2, gloo).

    torchrun … dist_worker.py OUT SCENARIO[,SCENARIO…]
Scenarios: `uniform` (6 steps, checkpoints at 3 and 6), `resume` (the same run killed during step 5, resumed
from step 3 in new trainers), `weighted` (weights = a power of the detached CE: `mean` normalisation needs the global
batch's weight total), `local` (the same weights through the one-pass path: local weights, the `mean` factor over
ranks scales the gradients after the backward), `warmup` (uniform with the trunk frozen for the first step). Rank 0 writes the full
parameters after training to OUT/<scenario>.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import CrashAfter, make_cfg, make_trainer  # noqa: E402

from wmtp.train.distributed import teardown  # noqa: E402
from wmtp.weighting.uniform import UniformWeight  # noqa: E402

# Adam's first steps move every parameter by ≈ lr·sign(g); a larger ε keeps gradients at rounding-noise level
# (different reduction orders on 1 and 2 ranks) from turning into lr-sized parameter differences.
PARITY = ("optim.eps=1e-4", "train.max_steps=6", "train.ckpt_every=3", "train.eval_every=3")
WARMUP = ("train.heads_warmup_steps=1",)


class SharpCEWeight(UniformWeight):
    """Weights = (detached CE)^8: far from uniform, so `mean` normalisation depends on the global batch."""

    needs_ce = True

    def weights(self, batch, valid, ce, outputs):
        return ce.pow(8) * valid


class LocalSharpCEWeight(SharpCEWeight):
    """SharpCEWeight's weights declared local (entry by entry): the step's one pass."""

    def has_local_weights(self) -> bool:
        return True

    def local_weights(self, ce, valid, extras, outputs):
        return ce.pow(8) * valid


SCENARIO_WEIGHTS = {"weighted": SharpCEWeight, "local": LocalSharpCEWeight}


def full_params(trainer) -> dict[str, torch.Tensor]:
    """Unsharded parameters (every rank takes part; rank 0 receives them)."""
    return get_model_state_dict(trainer.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def run(out: Path, scenario: str) -> None:
    cfg = make_cfg(out / scenario, *PARITY, *(WARMUP if scenario == "warmup" else ()))
    if scenario == "resume":
        crashing = make_trainer(cfg, weight_fn=CrashAfter(4))  # checkpoint at step 3, dies during step 5
        try:
            crashing.train()
        except KeyboardInterrupt:
            pass
        trainer = make_trainer(cfg)
        assert trainer.resume() and trainer.step == 3
    else:
        weight_fn = SCENARIO_WEIGHTS.get(scenario)
        trainer = make_trainer(cfg, weight_fn=weight_fn() if weight_fn else None)
    trainer.train()
    params = full_params(trainer)
    if trainer.dist.is_main:
        torch.save(params, out / f"{scenario}.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    for name in sys.argv[2].split(","):
        run(Path(sys.argv[1]), name)
    teardown()
