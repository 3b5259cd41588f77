"""Atomic training checkpoints: everything an exact resume needs, verified by sha256 on load.

Layout: run_dir/checkpoints/step_000123/{model.safetensors, wmtp_model.json, optimizer.pt, rng.pt,
trainer_state.json, manifest.json}; run_dir/checkpoints/latest names the newest complete one.
A checkpoint is written into a temporary directory, fsynced, then renamed: a killed save leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wmtp.model.checkpoints import MODEL_FILE, CheckpointError, load_model_weights, read_json_file, write_model_files
from wmtp.model.mtp import MTPModel

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    checkpoints_dir: Path,
    *,
    model: MTPModel,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    keep: int,
    name_step: int | None = None,
) -> Path:
    """Write step_{name_step:06d} atomically, point `latest` at it, keep the newest `keep` checkpoints.
    name_step: optimizer steps so far (default trainer_state["step"]; the critic's stage 1 counts too)."""
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / f"step_{trainer_state['step'] if name_step is None else name_step:06d}"
    tmp = checkpoints_dir / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_model_files(model, tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
    files = sorted(p.name for p in tmp.iterdir())
    for name in files:
        with (tmp / name).open("rb") as f:
            os.fsync(f.fileno())
    (tmp / MANIFEST).write_text(json.dumps({name: sha256_file(tmp / name) for name in files}, indent=1))
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    latest_tmp = checkpoints_dir / f".latest-{os.getpid()}"
    latest_tmp.write_text(final.name)
    os.replace(latest_tmp, checkpoints_dir / "latest")
    _fsync_dir(checkpoints_dir)
    for old in sorted(checkpoints_dir.glob("step_*"))[:-keep]:
        shutil.rmtree(old)
    return final


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The checkpoint named by `latest`, or None when the run has none."""
    pointer = checkpoints_dir / "latest"
    if not pointer.is_file():
        return None
    path = checkpoints_dir / pointer.read_text().strip()
    if not path.is_dir():
        raise CheckpointError(f"{pointer} names {path.name}, which does not exist")
    return path


def verify_checkpoint(path: Path) -> None:
    """Raise CheckpointError unless every file listed in the manifest exists with its recorded sha256."""
    manifest = read_json_file(path / MANIFEST, missing=f"checkpoint {path} is incomplete: no {MANIFEST}",
                              corrupt=f"checkpoint {path} has a corrupt {MANIFEST}")
    for name, digest in manifest.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path} is missing {name}")
        if sha256_file(file) != digest:
            raise CheckpointError(f"checkpoint {path} is corrupt: {name} does not match its sha256 in {MANIFEST}")


def load_checkpoint(path: Path, *, model: MTPModel, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Verify, then restore model, optimizer and RNG states; return the trainer state."""
    verify_checkpoint(path)
    load_model_weights(model, path / MODEL_FILE)
    device = next(model.parameters()).device
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    return json.loads((path / "trainer_state.json").read_text())
