"""Build a run from its config (data → tokenizer → model → trainer) and train it."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wmtp.config import RunConfig
from wmtp.data.collate import encode_records
from wmtp.data.dataset import PreparedData, prepare_data
from wmtp.model.checkpoints import save_model_dir
from wmtp.model.mtp import MTPModel
from wmtp.train.run_dir import write_run_files
from wmtp.train.trainer import Trainer
from wmtp.weighting.registry import build_weight_fn


class RunExistsError(FileExistsError):
    """The run directory already holds checkpoints and --resume was not given."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: RunConfig, tokenizer) -> MTPModel:
    """From config (random init, seeded) or from a pretrained trunk (`model.pretrained`)."""
    if cfg.model.pretrained is not None:
        return MTPModel.from_pretrained_trunk(
            cfg.model.pretrained, n_heads=cfg.model.n_heads, head1_is_trunk_layer=cfg.model.head1_is_trunk_layer
        )
    return MTPModel.from_config(
        cfg.model,
        vocab_size=len(tokenizer),
        pad_id=tokenizer.pad_token_id,
        bos_id=tokenizer.bos_token_id,
        eos_id=tokenizer.eos_token_id,
    )


@dataclass
class Run:
    cfg: RunConfig
    data: PreparedData
    trainer: Trainer


def build_run(cfg: RunConfig, *, resume: bool = False) -> Run:
    """Prepare data and model, write config.yaml/meta.json, and restore the latest checkpoint if resuming."""
    run_dir = Path(cfg.run_dir)
    if not resume and (run_dir / "checkpoints").exists():
        raise RunExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another run_dir")
    seed_everything(cfg.seed)
    data = prepare_data(cfg.data)
    model = build_model(cfg, data.tokenizer)
    train = encode_records(data.train, data.tokenizer, cfg.data.max_len)
    valid = encode_records(data.valid, data.tokenizer, cfg.data.max_len)
    trainer = Trainer(
        cfg,
        model=model,
        weight_fn=build_weight_fn(cfg.weighting),
        train_data=train,
        valid_data=valid,
        pad_id=data.tokenizer.pad_token_id,
        run_dir=run_dir,
    )
    if resume:
        trainer.resume()
    write_run_files(
        run_dir,
        cfg,
        data_fingerprint=data.fingerprint,
        tokenizer_hash=data.tokenizer_hash,
        data_dir=str(data.data_dir),
        n_train_records=len(train),
        n_valid_records=len(valid),
        n_params=model.n_params(),
    )
    data.tokenizer.save_pretrained(str(run_dir / "tokenizer"))
    return Run(cfg, data, trainer)


def train_run(cfg: RunConfig, *, resume: bool = False) -> Run:
    """Train to cfg.train.max_steps and save the final model into run_dir/model."""
    run = build_run(cfg, resume=resume)
    run.trainer.train()
    save_model_dir(run.trainer.model, Path(cfg.run_dir) / "model", run.data.tokenizer)
    return run
