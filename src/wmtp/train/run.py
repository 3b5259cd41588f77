"""Build a run from its config (data → tokenizer → model → trainer) and train it."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wmtp.config import ConfigError, RunConfig
from wmtp.data.collate import EncodedRecord, pack_records
from wmtp.data.dataset import PreparedData, prepare_data
from wmtp.data.records import DataError
from wmtp.data.token_cache import encode_cached
from wmtp.data.tokenizer import check_same_tokenizer, load_tokenizer
from wmtp.model.checkpoints import load_model_dir, save_model_dir
from wmtp.model.lora import apply_lora, merge_lora
from wmtp.model.meta_checkpoint import is_meta_checkpoint, load_meta_checkpoint
from wmtp.model.mtp import MTPModel
from wmtp.train.distributed import save_model_dir_gathered, teardown, world_size_from_env
from wmtp.train.memory import report_memory
from wmtp.train.run_dir import write_run_files
from wmtp.train.trainer import Trainer, resolve_device
from wmtp.weighting.ref_cache import CacheKey, attach_ref_ce, cache_dir, encoded_fingerprint, read_cache, write_cache
from wmtp.weighting.reference import (
    ReferenceScorer,
    ReferenceSource,
    check_reference_tokenizer,
    load_reference_model,
    reference_identity,
    reference_tokenizer,
    resolve_reference,
)
from wmtp.weighting.registry import build_weight_fn, uses_critic, uses_reference


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
        return load_meta_checkpoint(cfg.model.pretrained, n_heads=cfg.model.n_heads)
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


def _init_from(cfg: RunConfig, tokenizer) -> MTPModel:
    """A wmtp model directory as the starting point: same heads, same tokenizer; a saved value head is dropped
    (a critic run attaches a fresh one)."""
    directory = Path(cfg.model.init_from)
    model = load_model_dir(directory)
    if model.n_heads != cfg.model.n_heads or model.head1_is_trunk_layer != cfg.model.head1_is_trunk_layer:
        raise ConfigError(
            f"model.init_from={directory} has n_heads={model.n_heads}, head1_is_trunk_layer="
            f"{model.head1_is_trunk_layer}; the config asks for {cfg.model.n_heads}, {cfg.model.head1_is_trunk_layer}"
        )
    if not (directory / "tokenizer").is_dir():
        raise ConfigError(f"model.init_from={directory} has no tokenizer/ directory to check against the data's")
    try:
        check_same_tokenizer(tokenizer, load_tokenizer(directory / "tokenizer"))
    except ValueError as err:
        raise ConfigError(f"model.init_from={directory}: {err}") from None
    model.value_head = None
    return model


def encode_split(cfg: RunConfig, data: PreparedData, records: list) -> list[EncodedRecord]:
    """Tokenise one split (in cfg.data.num_proc processes; through the token cache when cfg.data.token_cache)."""
    encoded = encode_cached(
        records, data.tokenizer, cfg.data.max_len, tokenizer_hash=data.tokenizer_hash, num_proc=cfg.data.num_proc,
        cache_dir=cfg.data.cache_dir if cfg.data.token_cache else None,
    )
    if records and not encoded:
        raise DataError(f"none of the {len(records)} records of {data.data_dir} keeps a completion token within "
                        f"data.max_len={cfg.data.max_len}; raise data.max_len")
    return encoded


# ---- the Rho-1 reference -------------------------------------------------------------------------------


def _reference_source(cfg: RunConfig, data: PreparedData) -> ReferenceSource:
    """Resolve weighting.rho1.reference and refuse a reference whose tokenizer is not the policy's."""
    rcfg = cfg.weighting.rho1
    if rcfg.reference is None:
        raise ConfigError(
            f"weighting.name={cfg.weighting.name} needs a reference model: set weighting.rho1.reference to a wmtp "
            "run/model directory or an HF causal LM"
        )
    source = resolve_reference(rcfg.reference, revision=rcfg.reference_revision)
    check_reference_tokenizer(data.tokenizer, reference_tokenizer(source), where=rcfg.reference)
    return source


def reference_cache_key(
    cfg: RunConfig, data: PreparedData, records: list[EncodedRecord], source: ReferenceSource
) -> tuple[Path, CacheKey]:
    """(cache directory, CacheKey) of the reference CEs of `records` (train + valid, in that order)."""
    key = CacheKey(encoded_fingerprint(records), data.tokenizer_hash, reference_identity(source))
    root = cfg.weighting.rho1.cache_dir or Path(cfg.data.cache_dir) / "ref"
    return cache_dir(root, key), key


def score_reference(cfg: RunConfig) -> tuple[Path, dict[str, list[int]]]:
    """`wmtp score-ref`: write (or complete) the reference-CE cache of cfg's train + valid records."""
    data = prepare_data(cfg.data)
    records = encode_split(cfg, data, data.train) + encode_split(cfg, data, data.valid)
    source = _reference_source(cfg, data)
    directory, key = reference_cache_key(cfg, data, records, source)
    scorer = ReferenceScorer(
        load_reference_model(source, device=resolve_device(cfg.train.device)), chunk_tokens=cfg.train.ce_chunk_tokens
    )
    done = write_cache(
        records,
        scorer,
        directory=directory,
        key=key,
        pad_id=data.tokenizer.pad_token_id,
        shard_records=cfg.weighting.rho1.shard_records,
        batch_size=cfg.weighting.rho1.score_batch_size,
        reference_spec=cfg.weighting.rho1.reference,
        progress=cfg.train.progress,
    )
    return directory, done


def _with_reference(
    cfg: RunConfig, data: PreparedData, train: list[EncodedRecord], valid: list[EncodedRecord]
) -> tuple[list[EncodedRecord], list[EncodedRecord], ReferenceScorer | None, dict]:
    """Records carrying ref_ce from the cache (a missing or stale cache is an error), or, with
    weighting.rho1.ref_on_the_fly, the records as they are and a scorer that computes ref_ce per batch."""
    source = _reference_source(cfg, data)
    meta = {"spec": cfg.weighting.rho1.reference, "identity": reference_identity(source)}
    if cfg.weighting.rho1.ref_on_the_fly:
        model = load_reference_model(source, device=resolve_device(cfg.train.device))
        return train, valid, ReferenceScorer(model, chunk_tokens=cfg.train.ce_chunk_tokens), meta
    directory, key = reference_cache_key(cfg, data, train + valid, source)
    values = read_cache(directory, key, train + valid)
    meta["cache"] = {"dir": str(directory), "key": key.digest}
    return attach_ref_ce(train, values[: len(train)]), attach_ref_ce(valid, values[len(train) :]), None, meta


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
    if cfg.model.lora.rank is not None:  # before the value head, which trains fully
        if world_size_from_env() > 1:
            raise ConfigError("model.lora is for single-device runs; under torchrun FSDP trains all parameters")
        apply_lora(model, cfg.model.lora)
    if uses_critic(cfg.weighting):
        model.attach_value_head(cfg.weighting.critic.value_head)
    report_memory(model, cfg, world_size=world_size_from_env(), device=resolve_device(cfg.train.device))
    train, valid = encode_split(cfg, data, data.train), encode_split(cfg, data, data.valid)
    scorer, reference = None, {}
    if uses_reference(cfg.weighting):
        train, valid, scorer, reference = _with_reference(cfg, data, train, valid)
    if cfg.data.pack:  # after the reference CE is attached: packing concatenates it with the tokens
        train = pack_records(train, cfg.data.max_len)
    trainer = Trainer(
        cfg,
        model=model,
        weight_fn=build_weight_fn(
            cfg.weighting, seed=cfg.seed, scorer=scorer, reward_rate=sum(r.is_correct for r in train) / len(train)
        ),
        train_data=train,
        valid_data=valid,
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
            n_valid_records=len(valid),
            n_params=model.n_params(),
            **({"reference": reference} if reference else {}),
        )
        data.tokenizer.save_pretrained(str(run_dir / "tokenizer"))
    return Run(cfg, data, trainer)


def train_run(cfg: RunConfig, *, resume: bool = False) -> Run:
    """Train to cfg.train.max_steps and save the final model into run_dir/model."""
    run = build_run(cfg, resume=resume)
    run.trainer.train()
    model_dir = Path(cfg.run_dir) / "model"
    if run.trainer.dist is not None:
        save_model_dir_gathered(run.trainer.dist, run.trainer.model, model_dir, run.data.tokenizer)
        teardown()
    else:
        if cfg.model.lora.rank is not None:
            merge_lora(run.trainer.model)  # the final model is a plain MTPModel
        save_model_dir(run.trainer.model, model_dir, run.data.tokenizer)
    return run
