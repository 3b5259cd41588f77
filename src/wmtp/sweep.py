"""`wmtp sweep`: methods × seeds × a grid of overrides, one run directory each, resumable, in worker processes.

Layout of a sweep directory:
    base/                           with base_steps > 0: a uniform model every run starts from (model.init_from)
    reference/                      the Rho-1 reference (H=1, correct solutions), when a method needs it
    <method>[-<key>=<v>…]/seed<s>/  one run; every run shares the data split (data config) and step budget

Methods (`--methods`, comma-separated; `parse_methods`), each `[CONTROL:]WEIGHTING[@DATA]`:
    uniform, critic, rho1         a registered weighting (directory `uniform`, `critic`, …)
    shuffled:critic               a control (shuffled, random) of a weighting: weighting.name=shuffled
                                  weighting.control_of=critic, and the critic's data (data.train_on=all);
                                  directory `shuffled-of-critic` (a bare `shuffled` is a control of the config's
                                  weighting.control_of)
    uniform@all                   data.train_on=all (correct and incorrect records; `@correct`: correct only),
                                  e.g. uniform on the critic's data; directory `uniform-on-all`

Resumption: a run whose model/ exists and whose metrics reach train.max_steps is not trained again, and an
evaluation file that exists is not recomputed; a run killed midway continues from its latest checkpoint.
Each run is trained and then evaluated: greedy pass@1 on the test split (eval/synthetic.json, sandboxed) and
per-head CE / accuracy / error by reference-CE bin on the correct validation solutions (analysis/heads.json).

Memory: the sweep prints one memory estimate, that of its run (base and reference included) with the largest
estimated peak, before anything trains; the runs it launches do not print theirs (train_run(quiet_memory=True))
but each still refuses to start when it does not fit (train.check_memory).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wmtp.analysis.runs import HEADS_FILE
from wmtp.config import ConfigError, RunConfig, WeightingConfig, apply_overrides, load_config, validate
from wmtp.registry import declared_train_on, method_classes, used_sections, weightings
from wmtp.train.run_dir import read_metrics

if TYPE_CHECKING:
    from wmtp.train.memory import MemoryEstimate


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its name (its path under the sweep directory) and its validated config."""

    name: str
    method: str  # MethodSpec.text: `critic`, `shuffled:critic`, `uniform@all`
    seed: int
    cfg: RunConfig


@dataclass(frozen=True)
class SweepPlan:
    out_dir: Path
    base: RunConfig | None  # trained first; every run fine-tunes it
    reference: RunConfig | None  # trained next when a method reads reference CEs
    runs: list[SweepRun]


def parse_seeds(text: str) -> list[int]:
    """`5` → seeds 0..4; `3,7,11` → those seeds."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: give a count (5) or a comma-separated list (0,3,7)") from None
    if len(values) == 1 and "," not in text:
        if values[0] < 1:
            raise ConfigError(f"--seeds {text!r}: the count must be >= 1")
        return list(range(values[0]))
    if len(set(values)) != len(values) or not values:
        raise ConfigError(f"--seeds {text!r}: seeds must be distinct and at least one")
    return values


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """`key=v1,v2` items → {key: [v1, v2]} (values stay text: they are parsed as overrides)."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ConfigError(f"--grid {item!r} is not of the form key.sub=v1,v2")
        grid[key.strip()] = [v.strip() for v in values.split(",") if v.strip()]
    return grid


@dataclass(frozen=True)
class MethodSpec:
    """One `--methods` item: weighting.name, the weighting a control resamples, the data.train_on it asks for."""

    weighting: str
    control_of: str | None = None  # set exactly when `weighting` is a control
    train_on: str | None = None  # `@all` / `@correct`; None: the method's declared train_on or the config's

    @property
    def text(self) -> str:
        """The canonical spelling (`shuffled:critic`, `uniform@all`): the run's method in names and reports."""
        return (f"{self.weighting}:{self.control_of}" if self.control_of else self.weighting) + (
            f"@{self.train_on}" if self.train_on else "")

    @property
    def dir_name(self) -> str:
        """The run directory's name: `shuffled-of-critic`, `uniform-on-all`."""
        return "-".join([self.weighting, *(["of", self.control_of] if self.control_of else []),
                         *(["on", self.train_on] if self.train_on else [])])

    def overrides(self, base: WeightingConfig | None = None) -> list[str]:
        """weighting.name (and control_of), and data.train_on: the `@` data, else what the method declares with the
        sweep's weighting settings `base` (a hybrid's components are in its section; None: the defaults)."""
        out = [f"weighting.name={self.weighting}"]
        if self.control_of:
            out.append(f"weighting.control_of={self.control_of}")
        train_on = self.train_on or declared_train_on(self.weighting_config(base or WeightingConfig()))
        return out + ([f"data.train_on={train_on}"] if train_on is not None else [])

    def weighting_config(self, base: WeightingConfig) -> WeightingConfig:
        """`base` with this method's weighting.name and control_of (a view for reading declarations and sections)."""
        return base.model_copy(update={"name": self.weighting, "control_of": self.control_of or base.control_of})


TRAIN_ON = ("correct", "all")


def parse_method(text: str, *, default_control_of: str, weighting: WeightingConfig | None = None) -> MethodSpec:
    """`[CONTROL:]WEIGHTING[@DATA]` → MethodSpec (module docstring); a bare control resamples
    `default_control_of` (the config's weighting.control_of); `weighting`: the sweep's weighting settings, where a
    hybrid's components (and so its data) are named (None: the defaults). ConfigError saying what is wrong
    otherwise."""
    registered = weightings()
    item = text.strip()
    head, at, train_on = item.partition("@")
    first, colon, second = head.partition(":")
    first, second, train_on = first.strip(), second.strip(), train_on.strip()
    where = f"--methods item {text!r}"
    form = "give WEIGHTING, CONTROL:WEIGHTING or either with @correct / @all (e.g. shuffled:critic, uniform@all)"
    if not first or (colon and not second) or (at and not train_on) or ":" in second or "@" in train_on:
        raise ConfigError(f"{where}: {form}")
    for name in (first, second) if colon else (first,):
        if name not in registered:
            raise ConfigError(f"{where}: {name!r} is not a registered weighting; registered: {', '.join(registered)}")
    if colon and not registered[first].is_control:
        controls = ", ".join(n for n, c in registered.items() if c.is_control)
        raise ConfigError(f"{where}: {first} is not a control; before ':' comes a control ({controls}) of the "
                          f"weighting after it")
    control_of = (second or default_control_of) if registered[first].is_control else None
    if control_of is not None and registered[control_of].is_control:
        raise ConfigError(f"{where}: {control_of} is itself a control; a control resamples a weighting "
                          "(e.g. shuffled:critic)")
    if at and train_on not in TRAIN_ON:
        raise ConfigError(f"{where}: @{train_on} is not a data.train_on value; use @correct or @all")
    try:
        declared = declared_train_on(MethodSpec(first, control_of).weighting_config(weighting or WeightingConfig()))
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    if at and declared is not None and train_on != declared:
        method = f"{first}:{control_of}" if control_of else first
        raise ConfigError(f"{where}: {method} learns from data.train_on={declared} records; drop @{train_on}")
    return MethodSpec(first, control_of, train_on if at and declared is None else None)


def parse_methods(
    items: list[str], *, default_control_of: str = "rho1", weighting: WeightingConfig | None = None
) -> list[MethodSpec]:
    """Every `--methods` item parsed (parse_method); an empty list or the same method twice is refused."""
    if not items:
        raise ConfigError("--methods is empty; give e.g. uniform,critic,rho1,shuffled:critic,uniform@all")
    specs = [parse_method(item, default_control_of=default_control_of, weighting=weighting) for item in items]
    texts = [s.text for s in specs]
    repeated = sorted({t for t in texts if texts.count(t) > 1})
    if repeated:
        raise ConfigError(f"--methods names {', '.join(repeated)} more than once")
    return specs


def _applies(key: str, wcfg: WeightingConfig) -> bool:
    """A grid key under weighting.<section>. varies only the methods that use that section (`used_sections`: its
    own, a control's method's, a hybrid's components')."""
    for section in weightings():
        if key.startswith(f"weighting.{section}."):
            return section in used_sections(wcfg)
    return True


def reads_reference(cfg: RunConfig) -> str | None:
    """The section whose `reference` the run's weighting reads (a class of `method_classes` declaring
    uses_reference, e.g. a hybrid's rho1), else None."""
    return next((c.name for c in method_classes(cfg.weighting) if c.uses_reference), None)


def plan_sweep(
    config: str | None,
    overrides: list[str],
    *,
    out_dir: str | Path,
    methods: list[str],
    seeds: list[int],
    grid: dict[str, list[str]] | None = None,
    base_steps: int = 0,
    base_overrides: tuple[str, ...] = (),
) -> SweepPlan:
    """Every run's config, validated before anything is trained (a bad key fails here, naming it).

    base_steps > 0: first train a uniform model (same data, H, seed of the config, then `base_overrides`, e.g. its
    own learning rate) for that many steps into out_dir/base; every run then starts from it (`model.init_from`), as
    weighted training is meant to refine a trained model (a critic on a random trunk learns little). The Rho-1
    reference is then trained with the base's settings for base_steps + train.max_steps steps, as long as every
    run's model has trained in all; without a base, with the runs' settings.
    """
    out_dir, grid = Path(out_dir).resolve(), grid or {}  # absolute: runs name their base and reference by path
    overrides = [*overrides, "train.progress=false"]  # workers print one line per run, not bars
    base = load_config(config, [*overrides, f"run_dir={out_dir / 'reference'}"])
    specs = parse_methods(methods, default_control_of=base.weighting.control_of, weighting=base.weighting)
    shared = None
    if base_steps > 0:
        if base.model.init_from is not None or base.model.pretrained is not None:
            raise ConfigError("--base-steps trains the model every run starts from: leave model.init_from and "
                              "model.pretrained unset, or pass --base-steps 0")
        shared = validate(apply_overrides(base.model_dump(mode="json"), [
            f"run_dir={out_dir / 'base'}", f"train.max_steps={base_steps}", "weighting.name=uniform",
            "data.train_on=correct", *base_overrides]))
        overrides = [*overrides, f"model.init_from={out_dir / 'base' / 'model'}"]
    wcfgs = {spec: spec.weighting_config(base.weighting) for spec in specs}
    unused = [k for k in grid if not any(_applies(k, wcfgs[spec]) for spec in specs)]
    if unused:
        raise ConfigError(f"--grid {', '.join(unused)}: no method of {', '.join(s.text for s in specs)} uses it")
    reference_dir = out_dir / "reference"
    runs: list[SweepRun] = []
    for seed in seeds:
        for spec in specs:
            keys = [k for k in grid if _applies(k, wcfgs[spec])]
            for point in _product([grid[k] for k in keys]):
                chosen = [f"{k}={v}" for k, v in zip(keys, point)]
                name = "-".join([spec.dir_name, *(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(keys, point))])
                extra = [*spec.overrides(base.weighting), *chosen, f"seed={seed}", f"run_dir={out_dir / name / f'seed{seed}'}"]
                cfg = load_config(config, [*overrides, *extra])
                section = reads_reference(cfg)
                if section is not None and cfg.weighting.section(section).reference is None:
                    cfg = validate(apply_overrides(cfg.model_dump(mode="json"),
                                                   [f"weighting.{section}.reference={reference_dir}"]))
                runs.append(SweepRun(f"{name}/seed{seed}", spec.text, seed, cfg))
    needs_reference = any(Path(r.cfg.weighting.section(s).reference) == reference_dir
                          for r in runs if (s := reads_reference(r.cfg)) is not None)
    reference = None
    if needs_reference:
        settings = [] if shared is None else [f"train.max_steps={base_steps + base.train.max_steps}",
                                              f"run_dir={reference_dir}"]
        reference = validate(apply_overrides((shared or base).model_dump(mode="json"), [
            "model.n_heads=1", "data.train_on=correct", "weighting.name=uniform", "weighting.head_coefs=null",
            *settings]))
    return SweepPlan(out_dir, shared, reference, runs)


def _product(values: list[list[str]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [()]
    for options in values:
        out = [(*prefix, v) for prefix in out for v in options]
    return out


# ---- one run ----------------------------------------------------------------------------------------------


def is_trained(cfg: RunConfig) -> bool:
    """model/ written and metrics.jsonl holds the last step: nothing left to train."""
    run_dir = Path(cfg.run_dir)
    if not (run_dir / "model" / "model.safetensors").is_file() or not (run_dir / "metrics.jsonl").is_file():
        return False
    return any(r.get("kind") == "train" and r["step"] >= cfg.train.max_steps for r in read_metrics(run_dir))


def run_one(tree: dict[str, Any], *, evaluate: bool, reference_dir: str | None, threads: int) -> dict[str, Any]:
    """Train (or finish) one run, then evaluate what is missing. Runs in a worker process: takes and returns
    plain data. Returns {"trained": bool, "evaluated": [files], "seconds": float, "val_loss", "pass@1"}."""
    import torch

    from wmtp.train.run import train_run

    torch.set_num_threads(threads)
    cfg = validate(tree)
    started = time.perf_counter()
    trained = not is_trained(cfg)
    if trained:
        train_run(cfg, resume=True, quiet_memory=True)  # the sweep printed its largest estimate (sweep_memory)
    written = _evaluate(cfg, reference_dir) if evaluate else []
    return {"trained": trained, "evaluated": written, "seconds": time.perf_counter() - started, **_summary(cfg)}


def _evaluate(cfg: RunConfig, reference_dir: str | None) -> list[str]:
    """Write eval/synthetic.json (greedy pass@1 on the test split) and analysis/heads.json when missing."""
    from wmtp.analysis.baselines import unigram_ce
    from wmtp.analysis.heads import evaluate_heads
    from wmtp.data.collate import encode_records
    from wmtp.data.dataset import prepare_data
    from wmtp.eval.benchmarks.synthetic import evaluate_synthetic
    from wmtp.eval.evaluate import load_eval_model, write_json
    from wmtp.eval.generate import SamplingConfig
    from wmtp.weighting.reference import ReferenceScorer, load_reference_model, resolve_reference

    run_dir = Path(cfg.run_dir)
    if (run_dir / "eval" / "synthetic.json").is_file() and (run_dir / HEADS_FILE).is_file():
        return []
    model, tokenizer, _ = load_eval_model(run_dir=run_dir)
    data = prepare_data(cfg.data)
    written = []
    if not (run_dir / "eval" / "synthetic.json").is_file() and data.test:
        result = evaluate_synthetic(model, tokenizer, data.test, ks=(1,), progress=False,
                                    sampling=SamplingConfig(temperature=0.0, n=1, max_new_tokens=128))
        write_json(run_dir / "eval" / "synthetic.json", result)
        written.append("eval/synthetic.json")
    if not (run_dir / HEADS_FILE).is_file():
        train = encode_records([r for r in data.train if r.is_correct], tokenizer, cfg.data.max_len)
        valid = encode_records([r for r in data.valid if r.is_correct], tokenizer, cfg.data.max_len)
        scorer = None
        if reference_dir is not None:
            ref_model = load_reference_model(resolve_reference(reference_dir))
            scorer = ReferenceScorer(ref_model, chunk_tokens=cfg.train.ce_chunk_tokens)
        heads = evaluate_heads(model, valid, pad_id=tokenizer.pad_token_id, reference=scorer)
        heads["unigram_ce"] = unigram_ce(train, valid, model.vocab_size)  # a floor every model should beat
        write_json(run_dir / HEADS_FILE, heads)
        written.append(HEADS_FILE)
    return written


def _summary(cfg: RunConfig) -> dict[str, Any]:
    run_dir = Path(cfg.run_dir)
    evals = [r for r in read_metrics(run_dir) if r.get("kind") == "eval"]
    out: dict[str, Any] = {"val_loss": evals[-1]["val_loss"] if evals else None}
    synthetic = run_dir / "eval" / "synthetic.json"
    if synthetic.is_file():
        out["pass@1"] = json.loads(synthetic.read_text())["summary"].get("pass@1")
    return out


def _score_reference(tree: dict[str, Any], *, threads: int) -> dict[str, Any]:
    import torch

    from wmtp.weighting.reference_scores import score_reference

    torch.set_num_threads(threads)
    directory, done = score_reference(validate(tree))
    return {"cache": str(directory), "computed": len(done["computed"]), "reused": len(done["skipped"])}


# ---- the sweep --------------------------------------------------------------------------------------------


Job = tuple[str, Callable[..., dict[str, Any]], tuple, dict[str, Any]]


def run_sweep(
    plan: SweepPlan,
    *,
    workers: int = 1,
    evaluate: bool = True,
    on_event: Callable[[str, str, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the plan: data → base → reference → its CE cache → every run (train + evaluate), `workers` at a time
    (1: in this process, in order). on_event(stage, name, info) is called as each job starts ("start"), ends
    ("done") or fails ("failed"). Returns name → result (or {"error": message}) of every run."""
    from wmtp.data.dataset import prepare_data

    threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    emit = on_event or (lambda *_: None)
    for data_cfg in {r.cfg.data.model_dump_json(): r.cfg.data for r in plan.runs}.values():
        prepare_data(data_cfg)  # once, before workers race to generate the same split
    print_sweep_memory(plan)
    results: dict[str, dict[str, Any]] = {}
    # base and reference do not depend on each other: side by side, one thread each (threads beyond the free
    # cores spin against each other and can slow a step tenfold on a shared machine)
    first = [(name, run_one, (cfg.model_dump(mode="json"),), {"evaluate": False, "reference_dir": None,
                                                              "threads": threads})
             for name, cfg in (("base", plan.base), ("reference", plan.reference)) if cfg is not None]
    _run_jobs(first, workers=workers, emit=emit, results=results)
    if any("error" in results[name] for name, *_ in first):
        return results
    reference_dir = None if plan.reference is None else str(plan.reference.run_dir)
    if plan.reference is not None:
        scoring = {}
        for r in plan.runs:
            if reads_reference(r.cfg) is not None:
                scoring.setdefault(r.cfg.data.model_dump_json(), r.cfg.model_dump(mode="json"))
        _run_jobs([(f"score-ref {i}", _score_reference, (tree,), {"threads": threads})
                   for i, tree in enumerate(scoring.values())], workers=1, emit=emit, results=results)
    jobs: list[Job] = [
        (r.name, run_one, (r.cfg.model_dump(mode="json"),),
         {"evaluate": evaluate, "reference_dir": reference_dir, "threads": threads})
        for r in plan.runs
    ]
    _run_jobs(jobs, workers=workers, emit=emit, results=results)
    return results


def sweep_memory(plan: SweepPlan) -> tuple[str, MemoryEstimate]:
    """(name, estimate) of the plan's run with the largest estimated peak (models built on the meta device;
    configs that differ only in what the estimate does not read are estimated once)."""
    from wmtp.train.distributed import world_size_from_env
    from wmtp.train.memory import estimate_memory, model_for_estimate

    named = [(name, cfg) for name, cfg in (("base", plan.base), ("reference", plan.reference)) if cfg is not None]
    named += [(r.name, r.cfg) for r in plan.runs]
    estimates: dict[str, tuple[str, MemoryEstimate]] = {}
    for name, cfg in named:
        key = json.dumps([cfg.model.model_dump(mode="json"), cfg.train.model_dump(mode="json"),
                          cfg.data.model_dump(mode="json"), cfg.distributed.model_dump(mode="json")])
        if key not in estimates:
            estimates[key] = (name, estimate_memory(model_for_estimate(cfg), cfg, world_size=world_size_from_env()))
    return max(estimates.values(), key=lambda item: item[1].peak)


def print_sweep_memory(plan: SweepPlan) -> None:
    """The sweep's one memory estimate on stderr (its runs print none)."""
    name, estimate = sweep_memory(plan)
    print(f"largest of the sweep's {len(plan.runs)} runs: {name}\n{estimate.table()}", file=sys.stderr)


def _run_jobs(jobs: list[Job], *, workers: int, emit: Callable, results: dict[str, dict[str, Any]]) -> None:
    if workers <= 1 or len(jobs) <= 1:  # no process pool for a single job
        for name, fn, args, kwargs in jobs:
            emit("start", name, {})
            try:
                results[name] = fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 — one failed run must not stop the others; it resumes later
                results[name] = {"error": f"{type(err).__name__}: {err}"}
                emit("failed", name, results[name])
                continue
            emit("done", name, results[name])
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        pending: dict[Future, str] = {}
        queue = list(jobs)
        while queue or pending:
            while queue and len(pending) < workers:  # submit only what can start, so "start" is true
                name, fn, args, kwargs = queue.pop(0)
                emit("start", name, {})
                pending[pool.submit(fn, *args, **kwargs)] = name
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                name = pending.pop(future)
                try:
                    results[name] = future.result()
                except Exception as err:  # noqa: BLE001 — as above
                    results[name] = {"error": f"{type(err).__name__}: {err}"}
                    emit("failed", name, results[name])
                    continue
                emit("done", name, results[name])


def run_sweep_with_progress(plan: SweepPlan, *, workers: int = 1, evaluate: bool = True, show: bool = True,
                            console: Any = None) -> dict[str, dict[str, Any]]:
    """run_sweep with a progress bar over all jobs and one line per finished run (on stderr)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)
    total = len(plan.runs) + (0 if plan.reference is None else 2) + (0 if plan.base is None else 1)
    columns = (TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.description}"))
    with Progress(*columns, console=console, disable=not show) as progress:
        task = progress.add_task("", total=total)
        running: set[str] = set()

        def on_event(stage: str, name: str, info: dict[str, Any]) -> None:
            if stage == "start":
                running.add(name)
            else:
                running.discard(name)
                progress.advance(task)
                console.print(_event_line(stage, name, info), highlight=False)
            progress.update(task, description="running: " + ", ".join(sorted(running)))

        return run_sweep(plan, workers=workers, evaluate=evaluate, on_event=on_event)


def _event_line(stage: str, name: str, info: dict[str, Any]) -> str:
    if stage == "failed":
        return f"[red]failed[/] {name}: {info['error']} (run the sweep again to resume it)"
    if "cache" in info:
        return f"done {name}: reference CE cache {info['cache']} ({info['computed']} shards scored)"
    what = "trained" if info.get("trained") else "already trained"
    evaluated = f", evaluated {', '.join(info['evaluated'])}" if info.get("evaluated") else ""
    scores = ", ".join(f"{k} {info[k]:.4f}" for k in ("val_loss", "pass@1") if info.get(k) is not None)
    return f"done {name}: {what}{evaluated} in {info['seconds']:.0f} s — {scores}"
