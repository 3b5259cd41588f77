"""Build a run from its config (data → tokenizer → model → trainer) and train it."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wmtp.config import ConfigError, RunConfig
from wmtp.data.collate import Truncation, pack_records
from wmtp.data.dataset import PreparedData, encode_split, prepare_data
from wmtp.data.tokenizer import check_same_tokenizer, load_tokenizer
from wmtp.model.checkpoints import load_model_dir
from wmtp.model.lora import apply_lora, merge_lora
from wmtp.model.meta_checkpoint import is_meta_checkpoint, load_meta_checkpoint
from wmtp.model.mtp import MTPModel
from wmtp.registry import build_weight_fn
from wmtp.train.device import resolve_device
from wmtp.train.distributed import world_size_from_env
from wmtp.train.memory import report_memory
from wmtp.train.run_dir import write_run_files
from wmtp.train.trainer import Trainer
from wmtp.weighting.base import RunContext

log = logging.getLogger(__name__)


class RunExistsError(FileExistsError):
    """The run directory already holds checkpoints and --resume was not given."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: RunConfig, tokenizer) -> MTPModel:
    """From config (random init, seeded), from a trained wmtp model (`model.init_from`) or from a pretrained
    HF trunk (`model.pretrained`)."""
    if cfg.model.init_from is not None:
        return _init_from(cfg, tokenizer)
    if cfg.model.pretrained is not None and is_meta_checkpoint(cfg.model.pretrained):
        if not cfg.model.head1_is_trunk_layer:
            raise ConfigError("a Meta multi-token checkpoint has head 1 as its last trunk layer: set "
                              "model.head1_is_trunk_layer=true")
        return load_meta_checkpoint(
            cfg.model.pretrained, n_heads=cfg.model.n_heads, head_offsets=cfg.model.head_offsets
        )
    if cfg.model.pretrained is not None:
        return MTPModel.from_pretrained_trunk(
            cfg.model.pretrained, n_heads=cfg.model.n_heads, head1_is_trunk_layer=cfg.model.head1_is_trunk_layer,
            head_offsets=cfg.model.head_offsets,
        )
    return MTPModel.from_config(
        cfg.model,
        vocab_size=len(tokenizer),
        pad_id=tokenizer.pad_token_id,
        bos_id=tokenizer.bos_token_id,
        eos_id=tokenizer.eos_token_id,
    )


def _init_from(cfg: RunConfig, tokenizer) -> MTPModel:
    """A wmtp model directory as the starting point: same heads, same tokenizer; a saved value head is dropped
    (a weighting that needs one attaches a fresh one)."""
    directory = Path(cfg.model.init_from)
    model = load_model_dir(directory)
    saved = (model.n_heads, model.head1_is_trunk_layer, model.head_offsets)
    if saved != (cfg.model.n_heads, cfg.model.head1_is_trunk_layer, cfg.model.offsets):
        raise ConfigError(
            f"model.init_from={directory} has n_heads={model.n_heads}, head1_is_trunk_layer="
            f"{model.head1_is_trunk_layer}, head_offsets={list(model.head_offsets)}; the config asks for "
            f"{cfg.model.n_heads}, {cfg.model.head1_is_trunk_layer}, {list(cfg.model.offsets)}"
        )
    if not (directory / "tokenizer").is_dir():
        raise ConfigError(f"model.init_from={directory} has no tokenizer/ directory to check against the data's")
    try:
        check_same_tokenizer(tokenizer, load_tokenizer(directory / "tokenizer"))
    except ValueError as err:
        raise ConfigError(f"model.init_from={directory}: {err}") from None
    model.value_head = None
    return model


@dataclass
class Run:
    cfg: RunConfig
    data: PreparedData
    trainer: Trainer


def build_run(cfg: RunConfig, *, resume: bool = False, quiet_memory: bool = False) -> Run:
    """Prepare data and model, write config.yaml/meta.json, and restore the latest checkpoint if resuming.
    quiet_memory: check the memory estimate without printing it (runs of a sweep, which prints it once)."""
    run_dir = Path(cfg.run_dir)
    if not resume and (run_dir / "checkpoints").exists():
        raise RunExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another run_dir")
    seed_everything(cfg.seed)
    data = prepare_data(cfg.data)
    model = build_model(cfg, data.tokenizer)
    if cfg.model.lora.rank is not None:  # before the weighting's modules (e.g. a value head), which train fully
        if world_size_from_env() > 1:
            raise ConfigError("model.lora is for single-device runs; under torchrun FSDP trains all parameters")
        apply_lora(model, cfg.model.lora)
    weight_fn = build_weight_fn(cfg.weighting, seed=cfg.seed)
    weight_fn.attach(model)
    device = resolve_device(cfg.train.device)
    report_memory(model, cfg, world_size=world_size_from_env(), device=device, quiet=quiet_memory)
    (train_encoded, train_cut), (valid_encoded, valid_cut) = (
        encode_split(cfg.data, data, data.train), encode_split(cfg.data, data, data.valid))
    run = RunContext(cfg, data, train_encoded, valid_encoded, device)
    weight_fn.prepare(run)
    # packing after prepare: it concatenates whatever prepare attached to the records (e.g. ref_ce)
    train = pack_records(run.train, cfg.data.max_len) if cfg.data.pack else run.train
    trainer = Trainer(
        cfg,
        model=model,
        weight_fn=weight_fn,
        train_data=train,
        valid_data=run.valid,
        pad_id=data.tokenizer.pad_token_id,
        run_dir=run_dir,
    )
    if resume:
        trainer.resume()
    if trainer.is_main:  # under torchrun, rank 0 alone writes the run directory
        write_run_files(
            run_dir,
            cfg,
            data_fingerprint=data.fingerprint,
            tokenizer_hash=data.tokenizer_hash,
            data_dir=str(data.data_dir),
            n_train_records=len(train),
            n_valid_records=len(run.valid),
            n_params=model.n_params(),
            **truncation_meta("train", train_cut, cfg.data.max_len),
            **truncation_meta("valid", valid_cut, cfg.data.max_len),
            **run.meta,
        )
        data.tokenizer.save_pretrained(str(run_dir / "tokenizer"))
    return Run(cfg, data, trainer)


def truncation_meta(split: str, cut: Truncation | None, max_len: int) -> dict[str, int | None]:
    """meta.json fields of what data.max_len cut from a split (None: unknown, a token cache entry written
    before counting); a warning when records were cut."""
    if cut is not None and cut.n_truncated:
        log.warning("%s: %d records truncated at data.max_len=%d (%d tokens dropped)",
                    split, cut.n_truncated, max_len, cut.n_tokens_dropped)
    return {f"n_{split}_truncated": None if cut is None else cut.n_truncated,
            f"n_{split}_tokens_truncated": None if cut is None else cut.n_tokens_dropped}


def train_run(cfg: RunConfig, *, resume: bool = False, quiet_memory: bool = False) -> Run:
    """Train to cfg.train.max_steps and save the final model into run_dir/model (quiet_memory: build_run's)."""
    run = build_run(cfg, resume=resume, quiet_memory=quiet_memory)
    run.trainer.train()
    if cfg.model.lora.rank is not None:
        merge_lora(run.trainer.model)  # the final model is a plain MTPModel
    run.trainer.dist.save_model_dir(run.trainer.model, Path(cfg.run_dir) / "model", run.data.tokenizer)
    return run
