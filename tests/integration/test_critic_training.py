"""The critic in the trainer: two stages, exact resume in either stage, state-free validation, anchor integrity."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from test_trainer import comparable_rows
from test_trainer import make_cfg as trainer_cfg

from wmtp.data.collate import EncodedRecord
from wmtp.model.checkpoints import CheckpointError
from wmtp.model.mtp import MTPModel
from wmtp.train.trainer import Trainer
from wmtp.weighting.critic import CriticHasNoSignal, CriticWeight

VOCAB = 61


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread avoids OpenMP spin-waits on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_records(n: int, seed: int, prefix: str) -> list[EncodedRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.randint(8, 20)
        n_prompt = rng.randint(1, length - 3)
        ids = [1] + [rng.randint(3, VOCAB - 1) for _ in range(length - 2)] + [2]
        out.append(EncodedRecord(id=f"{prefix}{i}", input_ids=ids, n_prompt=n_prompt, is_correct=rng.random() < 0.5))
    return out


CRITIC = [
    "data.train_on=all",
    "weighting.name=critic",
    "weighting.critic.pretrain_epochs=0.5",  # 30 records / 4 per step → 4 stage-1 steps
    "weighting.critic.pretrain_trunk_lr_scale=0.5",
    "weighting.critic.mode=exp_adv",  # running moments: part of what resume must restore
    "weighting.critic.value_head=mlp",  # fast; the block head has its own test below
    "train.max_steps=5",
    "train.ckpt_every=2",
]


def make_cfg(run_dir: Path, *overrides: str):
    """test_trainer's tiny config with the critic (later overrides win)."""
    return trainer_cfg(run_dir, *CRITIC, *overrides)


class CrashingCritic(CriticWeight):
    """A critic whose value loss raises on call `n + 1` (stage 1 and stage 2 both call it): a killed run."""

    def __init__(self, *args, crash_after: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls, self.crash_after = 0, crash_after

    def value_loss(self, *args, **kwargs):
        self.calls += 1
        if self.calls > self.crash_after:
            raise KeyboardInterrupt("simulated kill")
        return super().value_loss(*args, **kwargs)


def make_trainer(cfg, crash_after: int | None = None) -> Trainer:
    torch.manual_seed(cfg.seed)
    model = MTPModel.from_config(cfg.model, vocab_size=VOCAB, pad_id=0, bos_id=1, eos_id=2)
    train = make_records(30, seed=1, prefix="t")
    rate = sum(r.is_correct for r in train) / len(train)
    if crash_after is None:
        critic = CriticWeight(cfg.weighting.critic, reward_rate=rate)
    else:
        critic = CrashingCritic(cfg.weighting.critic, reward_rate=rate, crash_after=crash_after)
    critic.attach(model)
    return Trainer(
        cfg,
        model=model,
        weight_fn=critic,
        train_data=train,
        valid_data=make_records(12, seed=2, prefix="v"),
        pad_id=0,
        run_dir=Path(cfg.run_dir),
    )


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("critic") / "full"
    trainer = make_trainer(make_cfg(run_dir))
    trainer.train()
    return run_dir, trainer


def test_two_stages_write_their_rows(full_run):
    run_dir, trainer = full_run
    rows = comparable_rows(run_dir)
    kinds = [r["kind"] for r in rows]
    assert trainer.weight_fn.stage_steps == 4 and trainer.weight_fn.stage_step == 4 and trainer.step == 5
    assert kinds.count("critic_train") == 4 and kinds.count("train") == 5
    assert kinds.index("critic_train") < kinds.index("train")  # stage 1 first
    first_eval = next(r for r in rows if r["kind"] == "eval")
    assert {"val_value_loss", "val_explained_var", "val_auc_last", "val_drift"} <= set(first_eval)
    train_row = next(r for r in rows if r["kind"] == "train")
    assert {"value_loss", "adv_mean", "adv_std", "td_abs_mean"} <= set(train_row)
    assert (run_dir / "critic_anchor.safetensors").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*")) == ["step_000008", "step_000009"]


@pytest.mark.parametrize("crash_after", [3, 4 + 3], ids=["in-stage-1", "in-stage-2"])
def test_resume_in_either_stage_continues_exactly(tmp_path, full_run, crash_after):
    full_dir, full = full_run
    cfg = make_cfg(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        make_trainer(cfg, crash_after=crash_after).train()
    resumed = make_trainer(cfg)
    assert resumed.resume()
    resumed.train()
    assert comparable_rows(tmp_path / "resumed") == comparable_rows(full_dir)
    assert resumed.weight_fn.moments.state_dict() == full.weight_fn.moments.state_dict()
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_validation_changes_no_state(tmp_path):
    trainer = make_trainer(make_cfg(tmp_path / "run", "weighting.critic.pretrain_epochs=0"))
    trainer.weight_fn.pre_train(lambda _: None)  # the anchor of an untrained critic
    trainer.train_step()
    params = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    moments = dict(trainer.weight_fn.moments.state_dict())
    state, rng = trainer.state_dict(), torch.get_rng_state()
    row = trainer.validate()
    assert row["kind"] == "eval" and "val_drift" in row
    assert trainer.weight_fn.moments.state_dict() == moments and trainer.state_dict() == state
    assert all(torch.equal(params[k], v) for k, v in trainer.model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


def test_a_tampered_anchor_is_reported(tmp_path):
    cfg = make_cfg(tmp_path / "run", "train.max_steps=2")
    make_trainer(cfg).train()
    anchor = tmp_path / "run" / "critic_anchor.safetensors"
    anchor.write_bytes(anchor.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match="critic_anchor"):
        make_trainer(cfg).resume()


def test_drift_control_keeps_the_critic_closer_to_its_stage1_anchor(tmp_path):
    """Same seed, same data: stage 2 with clipping + a strong anchor drifts less than without drift control."""
    drift = {}
    for name, overrides in {
        "free": ["weighting.critic.anchor_coef=0", "weighting.critic.value_clip=null"],
        "anchored": ["weighting.critic.anchor_coef=10", "weighting.critic.value_clip=0.05"],
    }.items():
        cfg = make_cfg(tmp_path / name, "train.max_steps=8", "weighting.critic.lr=1e-2", *overrides)
        make_trainer(cfg).train()
        evals = [r for r in comparable_rows(tmp_path / name) if r["kind"] == "eval"]
        drift[name] = evals[-1]["val_drift"]
    assert drift["free"] > 0
    assert drift["anchored"] < drift["free"]


def bug_records(n: int, seed: int, prefix: str) -> list[EncodedRecord]:
    """Incorrect completions contain the 'bug' token 5 somewhere, correct ones never: learnable from the prefix."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.randint(10, 20)
        n_prompt = rng.randint(2, 5)
        ids = [1] + [rng.choice([t for t in range(3, VOCAB) if t != 5]) for _ in range(length - 2)] + [2]
        correct = rng.random() < 0.5
        if not correct:
            ids[rng.randint(n_prompt, length - 2)] = 5
        out.append(EncodedRecord(id=f"{prefix}{i}", input_ids=ids, n_prompt=n_prompt, is_correct=correct))
    return out


def test_stage1_critic_separates_correct_from_incorrect_when_the_evidence_is_learnable(tmp_path):
    """The critic (block value head, frozen trunk) learns to rank correct above incorrect when the evidence is in
    the prefix, here a token of a random trunk (its surprise features carry no signal)."""
    cfg = make_cfg(
        tmp_path / "run", "weighting.critic.pretrain_epochs=6", "weighting.critic.pretrain_trunk_lr_scale=0",
        "weighting.critic.lr=3e-3", "train.batch_size=8", "train.eval_every=1000", "train.ckpt_every=1000",
        "weighting.critic.value_head=block",
    )
    torch.manual_seed(0)
    model = MTPModel.from_config(cfg.model, vocab_size=VOCAB, pad_id=0, bos_id=1, eos_id=2)
    critic = CriticWeight(cfg.weighting.critic, reward_rate=0.5)
    critic.attach(model)
    train = bug_records(160, seed=1, prefix="t")
    trainer = Trainer(
        cfg, model=model, weight_fn=critic, train_data=train,
        valid_data=bug_records(60, seed=2, prefix="v"), pad_id=0, run_dir=Path(cfg.run_dir),
    )
    assert trainer.validate(lm=False)["val_auc_last"] == 0.5  # V ≡ 0 before training: all ties
    trainer.weight_fn.pre_train(lambda _: None)
    assert trainer.validate(lm=False)["val_auc_last"] > 0.8


def test_a_critic_without_signal_warns_and_marks_its_last_stage1_row(full_run, capfd, tmp_path):
    """Random labels: the stage-1 AUC CI contains 0.5; the last critic_eval row says signal false, stderr warns."""
    run_dir, _ = full_run
    evals = [r for r in comparable_rows(run_dir) if r["kind"] == "critic_eval"]
    assert all(r["val_auc_ci_low"] <= r["val_auc_last"] <= r["val_auc_ci_high"] for r in evals)
    assert evals[-1]["signal"] is False and all("signal" not in r for r in evals[:-1])
    make_trainer(make_cfg(tmp_path / "again", "train.max_steps=1")).train()
    assert "WARNING: the stage-1 critic has no signal" in capfd.readouterr().err


def test_require_signal_stops_the_run_after_stage1(tmp_path):
    cfg = make_cfg(tmp_path / "run", "weighting.critic.require_signal=true")
    trainer = make_trainer(cfg)
    with pytest.raises(CriticHasNoSignal, match="does not exclude 0.5"):
        trainer.train()
    assert trainer.step == 0  # stage 2 never started
    rows = comparable_rows(tmp_path / "run")
    assert rows[-1]["kind"] == "critic_eval" and rows[-1]["signal"] is False


@pytest.mark.parametrize("value_grad_clip", [0.01, None])
def test_value_grad_clip_clips_the_value_head_on_its_own(tmp_path, value_grad_clip):
    """Gradients of 1 everywhere: with value_grad_clip the value head is scaled to its clip and the rest to
    optim.grad_clip, separately; with None one global clip scales all by the same factor. The returned norm is
    the norm of every gradient before clipping."""
    clip = "null" if value_grad_clip is None else value_grad_clip
    trainer = make_trainer(make_cfg(tmp_path / "run", f"weighting.critic.value_grad_clip={clip}", "optim.grad_clip=0.5"))
    head = {id(p) for p in trainer.model.value_head.parameters()}
    for p in trainer.model.parameters():
        p.grad = torch.ones_like(p)
    n_all = sum(p.numel() for p in trainer.model.parameters())
    norm = trainer.clip_grad_norm()
    assert norm == pytest.approx(n_all**0.5, rel=1e-5)

    def grad_norm(params):
        return sum(p.grad.pow(2).sum().item() for p in params) ** 0.5

    head_params = [p for p in trainer.model.parameters() if id(p) in head]
    rest = [p for p in trainer.model.parameters() if id(p) not in head]
    if value_grad_clip is None:
        assert grad_norm(head_params + rest) == pytest.approx(0.5, rel=1e-4)
        assert head_params[0].grad.flatten()[0].item() == pytest.approx(rest[0].grad.flatten()[0].item())
    else:
        assert grad_norm(head_params) == pytest.approx(value_grad_clip, rel=1e-4)
        assert grad_norm(rest) == pytest.approx(0.5, rel=1e-4)
