"""Save/load an MTPModel as a directory: model.safetensors + wmtp_model.json + tokenizer files.

wmtp_model.json records the architecture: heads, head_offsets, the trunk's HF config and the value head.
Loading rebuilds the trunk from its saved HF config (no download) and loads weights with strict key
checking: a missing or unexpected tensor is an error naming it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerBase

from wmtp.model.mtp import MTPModel

MODEL_FILE = "model.safetensors"
META_FILE = "wmtp_model.json"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or corrupt; the message names the file."""


def read_json_file(path: Path, *, missing: str, corrupt: str) -> Any:
    """The JSON in `path`; CheckpointError `missing` when there is no such file, `corrupt: <error>` when it does
    not parse."""
    if not path.is_file():
        raise CheckpointError(missing)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{corrupt}: {err}") from None


def model_meta(model: MTPModel) -> dict:
    return {
        "format": "wmtp-mtp-v1",
        "n_heads": model.n_heads,
        "head1_is_trunk_layer": model.head1_is_trunk_layer,
        "head_offsets": list(model.head_offsets),
        "trunk_config": model.trunk.config.to_dict(),
        "value_head": model.value_head.spec() if model.value_head is not None else None,
    }


def write_model_files(model: MTPModel, directory: Path) -> None:
    """Write model.safetensors and wmtp_model.json into an existing directory."""
    save_model(model, str(directory / MODEL_FILE))  # handles the tied embedding/unembedding
    (directory / META_FILE).write_text(json.dumps(model_meta(model), indent=1))


def build_from_meta(meta: dict) -> MTPModel:
    """An MTPModel with the saved architecture and freshly initialised weights (model files from before leap heads,
    without head_offsets, have heads 1..H)."""
    trunk_cfg = dict(meta["trunk_config"])
    config = AutoConfig.for_model(trunk_cfg.pop("model_type"), **trunk_cfg)
    trunk = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    model = MTPModel.from_trunk(trunk, n_heads=meta["n_heads"], head1_is_trunk_layer=meta["head1_is_trunk_layer"],
                                head_offsets=meta.get("head_offsets"))
    if meta.get("value_head") is not None:
        model.attach_value_head(meta["value_head"]["kind"], n_features=meta["value_head"].get("n_features", 0))
    return model


def load_model_weights(model: nn.Module, path: Path) -> None:
    """Strictly load safetensors weights into `model`; raise CheckpointError naming the file and keys."""
    if not path.is_file():
        raise CheckpointError(f"missing weights file {path}")
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"corrupt weights file {path}: {err}") from None
    if missing or unexpected:
        raise CheckpointError(f"weights in {path} do not match the model: missing {missing}, unexpected {unexpected}")


def save_model_dir(model: MTPModel, directory: str | Path, tokenizer: PreTrainedTokenizerBase | None = None) -> Path:
    """Atomically write a loadable model directory (written beside, then renamed into place)."""
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_model_files(model, tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return directory


def load_model_dir(directory: str | Path, *, device: str | torch.device = "cpu") -> MTPModel:
    """Load a directory written by `save_model_dir` (architecture from wmtp_model.json, strict weights)."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    meta = read_json_file(meta_path, missing=f"{directory} is not a wmtp model directory (no {META_FILE})",
                          corrupt=f"corrupt {meta_path}")
    model = build_from_meta(meta)
    load_model_weights(model, directory / MODEL_FILE)
    return model.to(device)
