"""The `wmtp` command line: each command loads a config, calls into the modules, writes a run directory."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from wmtp.config import ConfigError, load_config

app = typer.Typer(help="Weighted Multi-Token Prediction: train, evaluate and benchmark.", no_args_is_help=True)
bench_app = typer.Typer(help="Performance benchmarks; each prints one JSON object on its last line.")
app.add_typer(bench_app, name="bench")
console = Console(stderr=True, soft_wrap=True)  # soft wrap: paths in messages stay whole

ConfigOption = Annotated[
    str | None, typer.Option("--config", "-c", help="Preset name (tiny) or YAML file; default: the tiny preset.")
]
Overrides = Annotated[list[str] | None, typer.Argument(help="Dotted overrides, e.g. optim.lr=3e-4 model.n_heads=2")]


def _user_errors(fn: Callable) -> Callable:
    """Turn the errors a user can fix (bad config, missing data, corrupt checkpoint) into a message + exit 2."""
    from wmtp.data.records import DataError
    from wmtp.model.checkpoints import CheckpointError
    from wmtp.train.run import RunExistsError

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, DataError, CheckpointError, RunExistsError) as err:
            console.print(f"[bold red]error:[/] {err}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@_user_errors
def train(
    overrides: Overrides = None,
    config: ConfigOption = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in run_dir from its latest checkpoint.")] = False,
) -> None:
    """Train one run (any weighting) and write its run directory."""
    from wmtp.train.run import train_run

    cfg = load_config(config, overrides)
    run = train_run(cfg, resume=resume)
    console.print(f"run directory: [bold]{Path(run.cfg.run_dir).resolve()}[/]")


@app.command()
@_user_errors
def demo(
    overrides: Overrides = None,
    config: ConfigOption = None,
    run_dir: Annotated[str, typer.Option(help="Where the demo writes its run and report.")] = "runs/demo",
) -> None:
    """The main job: embedded synthetic data → tiny uniform MTP model on CPU → evaluation → report.md."""
    from wmtp.demo import run_demo

    cfg = load_config(config, [f"run_dir={run_dir}", *(overrides or [])])
    report = run_demo(cfg)
    console.print(f"report: [bold]{report.resolve()}[/]")


@bench_app.command("train")
def bench_train(
    vocab: Annotated[int, typer.Option(help="Vocabulary size.")] = 32000,
    seq: Annotated[int, typer.Option(help="Sequence length.")] = 1024,
    d_model: Annotated[int, typer.Option(help="Hidden size.")] = 256,
    n_layers: Annotated[int, typer.Option(help="Trunk blocks (incl. head 1).")] = 4,
    n_heads: Annotated[int, typer.Option(help="MTP heads of the multi-token model.")] = 4,
    batch: Annotated[int, typer.Option(help="Sequences per step.")] = 1,
    steps: Annotated[int, typer.Option(help="Timed steps per model (after warm-up).")] = 5,
) -> None:
    """Step time and memory: NTP (H=1) vs MTP (ours) vs naive MTP, each in its own process."""
    from wmtp.bench.train import run_train_bench

    result = run_train_bench(
        vocab=vocab, seq=seq, d_model=d_model, n_layers=n_layers, n_heads=n_heads, batch=batch, steps=steps
    )
    print(json.dumps(result))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
