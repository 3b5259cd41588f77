"""Run directories as the report sees them: found on disk, loaded from their files, grouped into variants.

A variant is the set of runs that differ only by seed. Its label is the weighting name plus the settings that
vary across the reported runs (only those of its own weighting section), e.g. `rho1 (rho1.temperature=0.5)`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wmtp.registry import weightings
from wmtp.train.run_dir import read_metrics

# Settings that say where or how visibly a run ran, not what it computed (and each weighting's `report_ignores`).
IGNORED_KEYS = {"seed", "run_dir", "train.progress", "train.device", "data.cache_dir"}
HEADS_FILE = "analysis/heads.json"


class ReportError(ValueError):
    """Run directories that cannot be reported; the message names the path."""


@dataclass
class RunData:
    """Everything the report reads from one run directory."""

    path: Path
    config: dict[str, Any]
    meta: dict[str, Any]
    rows: list[dict[str, Any]]
    evals: dict[str, dict[str, Any]]  # benchmark name → eval/<bench>.json
    heads: dict[str, Any] | None  # analysis/heads.json (per-head accuracy, difficulty bins)
    model_meta: dict[str, Any] | None  # model/wmtp_model.json

    @property
    def method(self) -> str:
        return self.config["weighting"]["name"]

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def n_heads(self) -> int:
        return int(self.config["model"]["n_heads"])

    def kind(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("kind") == name]


@dataclass
class Variant:
    label: str
    method: str
    runs: list[RunData] = field(default_factory=list)
    baseline: Variant | None = None  # the uniform variant with the same non-weighting settings

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (path / "metrics.jsonl").is_file()


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories among `paths` (each a run directory or a directory holding some, at any depth), minus
    those another found run builds on — a Rho-1 reference or a `model.init_from` base (not compared)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ReportError(f"{p} does not exist")
        if is_run_dir(p):
            found.append(p)
            continue
        found += sorted(m.parent for m in p.rglob("metrics.jsonl") if is_run_dir(m.parent))
    if not found:
        raise ReportError(f"no run directory (config.yaml + metrics.jsonl) under {', '.join(map(str, paths))}")
    sources = {_resolved(s) for p in found for s in _sources_of(p)}
    return [p for p in dict.fromkeys(found) if p.resolve() not in sources]


def _sources_of(path: Path) -> list[Path]:
    """The run directories (or their model/) that the run at `path` reads: a weighting's reference and its init."""
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    refs = [v.get("reference") for v in cfg.get("weighting", {}).values() if isinstance(v, dict)]
    init = cfg.get("model", {}).get("init_from")
    return [Path(x) for x in (*refs, init) if x is not None]


def _resolved(path: Path) -> Path:
    return path.parent.resolve() if path.name == "model" else path.resolve()


def load_run(path: str | Path) -> RunData:
    path = Path(path)
    if not is_run_dir(path):
        raise ReportError(f"{path} is not a run directory (needs config.yaml and metrics.jsonl)")
    evals = {}
    if (path / "eval").is_dir():
        evals = {f.stem: json.loads(f.read_text()) for f in sorted((path / "eval").glob("*.json"))}
    return RunData(
        path=path,
        config=yaml.safe_load((path / "config.yaml").read_text()),
        meta=_json_or_none(path / "meta.json") or {},
        rows=read_metrics(path),
        evals=evals,
        heads=_json_or_none(path / HEADS_FILE),
        model_meta=_json_or_none(path / "model" / "wmtp_model.json"),
    )


def _json_or_none(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list) else value
    return out


def ignored_keys() -> set[str]:
    """IGNORED_KEYS and every registered weighting's `report_ignores` fields."""
    return IGNORED_KEYS | {f"weighting.{name}.{key}" for name, cls in weightings().items() for key in cls.report_ignores}


def implied_by_method(method: str, control_of: str | None = None) -> set[str]:
    """Settings a weighting fixes for itself (the declared `train_on` of the method it follows, e.g. the critic's, as
    sweeps set it): part of the method. An unregistered method implies nothing."""
    classes = weightings()
    cls = classes.get(method)
    if cls is not None and cls.is_control:
        cls = classes.get(control_of)
    return {"data.train_on"} if cls is not None and cls.train_on is not None else set()


def _relevant(run: RunData) -> dict[str, Any]:
    """The run's settings minus where it ran and minus the sections of weightings it does not use (the sections are
    the mappings under `weighting`)."""
    weighting = run.config["weighting"]
    cls = weightings().get(run.method)
    own = {run.method, weighting.get("control_of")} if cls is not None and cls.is_control else {run.method}
    sections = {k for k, v in weighting.items() if isinstance(v, dict)}
    return {
        k: v
        for k, v in flatten(run.config).items()
        if k not in ignored_keys() | implied_by_method(run.method, weighting.get("control_of"))
        and not any(k.startswith(f"weighting.{s}.") and s not in own for s in sections)
    }


def group_variants(runs: list[RunData]) -> list[Variant]:
    """Variants in first-seen order (uniform first); each run belongs to the variant of its settings."""
    settings = [_relevant(r) for r in runs]
    keys = sorted({k for s in settings for k in s})
    # a key varies when the runs that have it disagree (a weighting's section exists only for its own runs)
    varying = [k for k in keys if k != "weighting.name" and len({json.dumps(s[k]) for s in settings if k in s}) > 1]
    variants: dict[str, Variant] = {}
    for run, s in zip(runs, settings):
        shown = [f"{k.removeprefix('weighting.')}={s[k]}" for k in varying if k in s]
        label = run.method + (f" ({', '.join(shown)})" if shown else "")
        variants.setdefault(label, Variant(label, run.method)).runs.append(run)
    for v in variants.values():
        seeds = v.seeds
        if len(set(seeds)) != len(seeds):
            dup = sorted({s for s in seeds if seeds.count(s) > 1})
            paths = ", ".join(str(r.path) for r in v.runs if r.seed in dup)
            raise ReportError(f"variant {v.label!r} has several runs with seed {dup}: {paths}; report one of them")
    ordered = sorted(variants.values(), key=lambda v: v.method != "uniform")
    for v in ordered:
        v.baseline = _baseline(v, ordered)
    return ordered


def _baseline(variant: Variant, variants: list[Variant]) -> Variant | None:
    """The uniform variant whose settings outside `weighting` equal this one's (None for uniform itself)."""
    if variant.method == "uniform":
        return None
    mine = _outside_weighting(variant.runs[0])
    for v in variants:
        if v.method == "uniform" and _outside_weighting(v.runs[0]) == mine:
            return v
    return None


def _outside_weighting(run: RunData) -> dict[str, Any]:
    implied = set().union(*(implied_by_method(name) for name in weightings()))
    return {k: v for k, v in _relevant(run).items() if not k.startswith("weighting.") and k not in implied}
