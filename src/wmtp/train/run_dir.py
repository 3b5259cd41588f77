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


class TensorBoardLog:
    """Mirror of metrics.jsonl rows into TensorBoard event files (torch.utils.tensorboard) in `log_dir` (None: no
    mirror; every method does nothing).

    Each numeric field of a row is a scalar tagged `<kind>/<field>` at the row's `step` (booleans as 0/1,
    non-numeric fields skipped); a `weights_hist` row is one histogram per head (`weights/h<k>`), built from the
    row's own edges and counts. The writer opens on the first row and after `close` reopens with a new event file.

    Resume: event files are append-only (metrics.jsonl is truncated, they are not), so a resumed run writes its rows
    from the resumed step again into a new event file; a step the interrupted run had logged past its last checkpoint
    then has two points, the later one (newer file) the resumed run's (resume is exact, so both are normally equal;
    how a viewer picks between them is the viewer's).
    """

    def __init__(self, log_dir: Path | None):
        self.log_dir = log_dir
        self._writer: Any = None

    def write(self, row: dict[str, Any]) -> None:
        if self.log_dir is None:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # the `tensorboard` package, only when asked for

            self._writer = SummaryWriter(log_dir=str(self.log_dir))
        kind, step = row.get("kind", "metrics"), row["step"]
        if kind == "weights_hist":
            self._histograms(row, step)
            return
        for field, value in row.items():
            if field in ("kind", "step"):
                continue
            if isinstance(value, bool):
                value = int(value)
            if isinstance(value, (int, float)):
                self._writer.add_scalar(f"{kind}/{field}", value, step)

    def _histograms(self, row: dict[str, Any], step: int) -> None:
        """Bin k is [edges[k], edges[k+1]) (the last bin also holds larger values); min/max/sum are those of the
        non-empty bins' bounds and midpoints (the row holds no raw weights)."""
        edges = row["edges"]
        for field, counts in row.items():
            if not field.startswith("counts_h") or sum(counts) == 0:
                continue
            used = [i for i, c in enumerate(counts) if c]
            mids = [(edges[i] + edges[i + 1]) / 2 for i in range(len(counts))]
            self._writer.add_histogram_raw(
                f"weights/{field.removeprefix('counts_')}",
                min=edges[used[0]],
                max=edges[used[-1] + 1],
                num=sum(counts),
                sum=sum(c * m for c, m in zip(counts, mids)),
                sum_squares=sum(c * m * m for c, m in zip(counts, mids)),
                bucket_limits=edges[1:],
                bucket_counts=counts,
                global_step=step,
            )

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class MetricsLog:
    """Append-only metrics.jsonl; `truncate_after` drops rows a resumed run will write again.
    enabled=False (ranks other than 0 under torchrun): writes nothing. `tensorboard`: a directory that receives
    every row as well (TensorBoardLog); metrics.jsonl stays the source of truth."""

    def __init__(self, path: Path, *, enabled: bool = True, tensorboard: Path | None = None):
        self.path = path
        self.enabled = enabled
        self.tensorboard = TensorBoardLog(tensorboard if enabled else None)

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self.tensorboard.write(row)

    def flush(self) -> None:
        """Push buffered TensorBoard events to disk (metrics.jsonl is written row by row)."""
        self.tensorboard.flush()

    def close(self) -> None:
        """Close the TensorBoard writer (and its thread); a later `write` opens a new event file."""
        self.tensorboard.close()

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
