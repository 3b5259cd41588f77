"""Run directories as the report sees them: found on disk, loaded from their files, grouped into variants.

A variant is the set of runs that differ only by seed. Its label is the run's method as `wmtp sweep --methods`
spells it (`critic`, `shuffled:critic` for a control, `uniform@all` for data.train_on=all where the method does
not fix it) plus the settings that vary across the reported runs (only those of its own weighting sections), e.g.
`rho1 (rho1.temperature=0.5)`.

Each variant is compared with (Variant.comparisons): `baseline`, the uniform variant with the same settings
outside `weighting` on the same data (for a method that fixes its data, like the critic's correct + incorrect
records, uniform on the default data, correct solutions); `data_baseline`, uniform on the variant's own data when
that is another variant (the critic's data-matched baseline, `uniform@all`); and `controls`, the control variants
(`shuffled:<method>`, `random:<method>`) of the method with the same settings otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wmtp.config import DataConfig, WeightingConfig
from wmtp.registry import declared_train_on, used_sections, weightings
from wmtp.train.run_dir import read_metrics

# Settings that say where or how visibly a run ran, not what it computed (and each weighting's `report_ignores`).
IGNORED_KEYS = {"seed", "run_dir", "train.progress", "train.device", "data.cache_dir"}
HEADS_FILE = "analysis/heads.json"
DEFAULT_TRAIN_ON = DataConfig.model_fields["train_on"].default
SPEC_KEYS = ("weighting.name", "weighting.control_of", "data.train_on")  # shown by the method spec of the label


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

    @property
    def control_of(self) -> str | None:
        """The weighting a control run resamples (None for a run that is not a control)."""
        cls = weightings().get(self.method)
        return self.config["weighting"].get("control_of") if cls is not None and cls.is_control else None

    @property
    def train_on(self) -> str:
        return self.config.get("data", {}).get("train_on", DEFAULT_TRAIN_ON)

    @property
    def method_spec(self) -> str:
        """`critic`, `shuffled:critic`, `uniform@all`: the `--methods` item that makes this run (wmtp.sweep)."""
        spec = f"{self.method}:{self.control_of}" if self.control_of else self.method
        fixed = "data.train_on" in implied_by_method(self.config["weighting"])
        return spec + (f"@{self.train_on}" if not fixed and self.train_on != DEFAULT_TRAIN_ON else "")

    def kind(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("kind") == name]


@dataclass
class Variant:
    label: str
    method: str  # weighting.name
    runs: list[RunData] = field(default_factory=list)
    baseline: Variant | None = None  # uniform with the same non-weighting settings (module docstring)
    data_baseline: Variant | None = None  # uniform on this variant's data when that is not `baseline`
    controls: list[Variant] = field(default_factory=list)  # shuffled / random of this method, same settings
    control_of: str | None = None  # for a control variant: the weighting it resamples
    train_on: str = DEFAULT_TRAIN_ON

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    def comparisons(self) -> list[tuple[str, Variant]]:
        """(kind, variant) this variant is tested against: "uniform", "uniform on the same data", "control"."""
        out = [("uniform", self.baseline)] if self.baseline else []
        out += [("uniform on the same data", self.data_baseline)] if self.data_baseline else []
        return out + [("control", c) for c in self.controls]


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


def _weighting_config(weighting: dict[str, Any]) -> WeightingConfig | None:
    """A run's `weighting` settings validated here (None when they name a weighting not registered here)."""
    try:
        return WeightingConfig.model_validate(weighting)
    except ValueError:
        return None


def implied_by_method(weighting: dict[str, Any]) -> set[str]:
    """Settings a run's weighting fixes for itself (the declared `train_on` of the method(s) it follows, e.g. the
    critic's or a hybrid's components', as sweeps set it): part of the method. An unregistered method implies
    nothing."""
    wcfg = _weighting_config(weighting)
    try:
        fixed = wcfg is not None and declared_train_on(wcfg) is not None
    except ValueError:  # components declaring different data (a config that does not validate as a run)
        fixed = False
    return {"data.train_on"} if fixed else set()


def _relevant(run: RunData) -> dict[str, Any]:
    """The run's settings minus where it ran and minus the sections of weightings it does not use (the sections are
    the mappings under `weighting`; a control uses its method's, a hybrid its components')."""
    weighting = run.config["weighting"]
    wcfg = _weighting_config(weighting)
    own = used_sections(wcfg) if wcfg is not None else {run.method}
    sections = {k for k, v in weighting.items() if isinstance(v, dict)}
    return {
        k: v
        for k, v in flatten(run.config).items()
        if k not in ignored_keys() | implied_by_method(weighting)
        and not any(k.startswith(f"weighting.{s}.") and s not in own for s in sections)
    }


def group_variants(runs: list[RunData]) -> list[Variant]:
    """Variants in first-seen order (uniform first); each run belongs to the variant of its settings."""
    settings = [_relevant(r) for r in runs]
    keys = sorted({k for s in settings for k in s})
    # a key varies when the runs that have it disagree (a weighting's section exists only for its own runs)
    varying = [k for k in keys if k not in SPEC_KEYS and len({json.dumps(s[k]) for s in settings if k in s}) > 1]
    variants: dict[str, Variant] = {}
    for run, s in zip(runs, settings):
        shown = [f"{k.removeprefix('weighting.')}={s[k]}" for k in varying if k in s]
        label = run.method_spec + (f" ({', '.join(shown)})" if shown else "")
        variant = variants.setdefault(label, Variant(label, run.method, control_of=run.control_of,
                                                     train_on=run.train_on))
        variant.runs.append(run)
    for v in variants.values():
        seeds = v.seeds
        if len(set(seeds)) != len(seeds):
            dup = sorted({s for s in seeds if seeds.count(s) > 1})
            paths = ", ".join(str(r.path) for r in v.runs if r.seed in dup)
            raise ReportError(f"variant {v.label!r} has several runs with seed {dup}: {paths}; report one of them")
    found = sorted(variants.values(), key=lambda v: v.method != "uniform")
    for v in found:
        v.baseline, v.data_baseline = _baselines(v, found)
        if v.control_of is None:
            mine = _control_key(v.runs[0])
            v.controls = [c for c in found if c.control_of == v.method and _control_key(c.runs[0]) == mine]
    ordered: list[Variant] = []  # uniform first, then each method followed by its controls
    for v in found:
        if v.control_of is None:
            ordered += [v, *v.controls]
    return ordered + [v for v in found if v not in ordered]


def _baselines(variant: Variant, variants: list[Variant]) -> tuple[Variant | None, Variant | None]:
    """(baseline, data_baseline) of `variant` (module docstring): uniform variants whose settings outside
    `weighting` and data.train_on equal this one's, on the data it asks for / on the data it trains on."""
    mine = _outside_weighting(variant.runs[0])
    uniform = {v.train_on: v for v in variants if v.method == "uniform" and v is not variant
               and _outside_weighting(v.runs[0]) == mine}
    if variant.method == "uniform":
        return (uniform.get(DEFAULT_TRAIN_ON), None) if variant.train_on != DEFAULT_TRAIN_ON else (None, None)
    fixed = "data.train_on" in implied_by_method(variant.runs[0].config["weighting"])
    baseline = uniform.get(DEFAULT_TRAIN_ON if fixed else variant.train_on)
    same_data = uniform.get(variant.train_on)
    return baseline, same_data if same_data is not baseline else None


def _outside_weighting(run: RunData) -> dict[str, Any]:
    return {k: v for k, v in _relevant(run).items() if not k.startswith("weighting.") and k != "data.train_on"}


def _control_key(run: RunData) -> dict[str, Any]:
    """The run's settings that a control of its method shares with it: all but the spec and the control's own
    section (data.train_on included: a control trains on its method's data)."""
    own = f"weighting.{run.method}." if run.control_of else None
    return {"data.train_on": run.train_on, **{k: v for k, v in _relevant(run).items() if k not in SPEC_KEYS
                                                and not (own and k.startswith(own))}}
