"""The run directory: resolved config, provenance (meta.json) and metrics.jsonl (the source of truth)."""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from wmtp.config import RunConfig, config_hash, dump_yaml

VERSIONED_PACKAGES = ("wmtp", "torch", "transformers", "tokenizers", "safetensors", "pydantic", "numpy")


def git_sha() -> str | None:
    """Commit of the wmtp source tree, when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_run_files(run_dir: Path, cfg: RunConfig, *, data_fingerprint: str, tokenizer_hash: str, **extra: Any) -> None:
    """config.yaml and meta.json (git sha, versions, seed, config hash, data fingerprint, tokenizer hash)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    meta = {
        "config_hash": config_hash(cfg),
        "git_sha": git_sha(),
        "versions": package_versions(),
        "seed": cfg.seed,
        "data_fingerprint": data_fingerprint,
        "tokenizer_hash": tokenizer_hash,
        **extra,
    }
    (run_dir / "meta.json").write_text(json.dumps(meta, indent=1))


class MetricsLog:
    """Append-only metrics.jsonl; `truncate_after` drops rows a resumed run will write again.
    enabled=False (ranks other than 0 under torchrun): writes nothing."""

    def __init__(self, path: Path, *, enabled: bool = True):
        self.path = path
        self.enabled = enabled

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def truncate_after(self, step: int, *, pre_train_step: int = 0, pre_train_kinds: tuple[str, ...] = ()) -> None:
        """Keep rows up to `step`; rows of a weighting's pre-training stage (`pre_train_kinds`) up to
        `pre_train_step` instead."""
        if not self.enabled or not self.path.exists():
            return

        def keep(row: dict[str, Any]) -> bool:
            return row["step"] <= (pre_train_step if row.get("kind") in pre_train_kinds else step)

        rows = [line for line in self.path.read_text().splitlines() if line and keep(json.loads(line))]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(r + "\n" for r in rows))
        tmp.replace(self.path)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line]
