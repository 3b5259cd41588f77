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
    from wmtp.eval.sandbox import SandboxUnavailable
    from wmtp.model.checkpoints import CheckpointError
    from wmtp.train.run import RunExistsError

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, DataError, CheckpointError, RunExistsError, SandboxUnavailable) as err:
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


@app.command("score-ref")
@_user_errors
def score_ref(overrides: Overrides = None, config: ConfigOption = None) -> None:
    """Score every train/valid record with weighting.rho1.reference into the Rho-1 reference-CE cache.

    Resumable: shards already written are kept. Run it with the same config and overrides as the training.
    """
    from wmtp.train.run import score_reference

    cfg = load_config(config, overrides)
    directory, done = score_reference(cfg)
    console.print(
        f"reference cache: [bold]{directory.resolve()}[/] ({len(done['computed'])} shards scored, "
        f"{len(done['skipped'])} reused)"
    )


@app.command()
@_user_errors
def demo(
    overrides: Overrides = None,
    config: ConfigOption = None,
    run_dir: Annotated[str, typer.Option(help="Where the demo writes its run and report.")] = "runs/demo",
) -> None:
    """The main job: embedded synthetic data → tiny uniform MTP model on CPU, then a next-token reference and a
    Rho-1 weighted run → evaluation → report.md."""
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
    weighting: Annotated[str, typer.Option(help="Also time MTP with this weighting (e.g. rho1) vs uniform.")] = "uniform",
) -> None:
    """Step time and memory: NTP (H=1) vs MTP (ours) vs naive MTP, each in its own process."""
    from wmtp.bench.train import run_train_bench

    result = run_train_bench(
        vocab=vocab, seq=seq, d_model=d_model, n_layers=n_layers, n_heads=n_heads, batch=batch, steps=steps,
        weighting=weighting,
    )
    print(json.dumps(result))


@app.command("eval")
@_user_errors
def eval_(
    bench: Annotated[str, typer.Option(help="Comma-separated: synthetic, humaneval, mbpp, codecontests, gsm8k, "
                                            "math, hellaswag.")],
    run: Annotated[Path | None, typer.Option(help="wmtp run directory: evaluates RUN/model, writes RUN/eval/.")] = None,
    hf_model: Annotated[str | None, typer.Option(help="Or an HF causal LM (path or hub name; needs --out).")] = None,
    out: Annotated[Path | None, typer.Option(help="Directory of the <bench>.json files; default RUN/eval.")] = None,
    n: Annotated[int, typer.Option(help="Samples per problem.")] = 1,
    k: Annotated[str, typer.Option(help="Comma-separated k of pass@k (k > n is dropped).")] = "1,10,100",
    temperature: Annotated[float, typer.Option(help="0 is greedy decoding.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per sample at most.")] = 256,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N problems.")] = None,
    data_file: Annotated[Path | None, typer.Option(help="Local data of the (single) benchmark.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Or an HF hub dataset NAME[:CONFIG] (downloads; needs "
                                                     "`datasets`).")] = None,
    split: Annotated[str | None, typer.Option(help="Split of --dataset (default: the benchmark's).")] = None,
    n_shot: Annotated[int | None, typer.Option(help="Few-shot examples (default: MBPP 3, others 0).")] = None,
    fewshot_file: Annotated[Path | None, typer.Option(help="GSM8K / MATH few-shot rows (a train jsonl).")] = None,
    unsafe: Annotated[bool, typer.Option("--unsafe", help="Run generated code WITHOUT the bwrap sandbox.")] = False,
    timeout: Annotated[float | None, typer.Option(help="Per-program wall seconds (default: the benchmark's).")] = None,
    workers: Annotated[int | None, typer.Option(help="Parallel sandboxed programs (default: CPU count).")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per generation batch.")] = 16,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    progress: Annotated[bool, typer.Option(help="Progress bars.")] = True,
    speculative: Annotated[bool, typer.Option("--speculative", help="Greedy self-speculative decoding with the "
                                                                   "MTP heads (same tokens, fewer forwards).")] = False,
) -> None:
    """Evaluate a run (or an HF model) on benchmarks; writes <out>/<bench>.json, prints a JSON summary last."""
    from wmtp.eval.evaluate import EvalRequest, run_eval
    from wmtp.eval.generate import SamplingConfig
    from wmtp.eval.sandbox import SandboxUnavailable

    try:
        ks = tuple(sorted({int(x) for x in k.split(",") if x.strip()}))
        request = EvalRequest(
            benches=tuple(b.strip() for b in bench.split(",") if b.strip()),
            sampling=SamplingConfig(temperature=temperature, top_p=top_p, n=n, max_new_tokens=max_new_tokens,
                                    seed=seed, speculative=speculative),
            ks=ks, limit=limit, data_file=None if data_file is None else str(data_file), dataset=dataset,
            split=split, n_shot=n_shot, fewshot_file=None if fewshot_file is None else str(fewshot_file),
            unsafe=unsafe, timeout_s=timeout, workers=workers, batch_size=batch_size, progress=progress,
        )
        if (run is None) == (hf_model is None):
            raise ValueError("pass exactly one of --run RUN_DIR or --hf-model NAME")
        if hf_model is not None and out is None:
            raise ValueError("with --hf-model, pass --out DIR for the result files")
    except ValueError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(2) from None
    if unsafe:
        console.print("[bold red]warning:[/] --unsafe: generated programs run WITHOUT isolation, with your rights",
                      highlight=False)

    summaries: dict[str, dict] = {}

    def report(name: str, path: Path, result: dict) -> None:
        summary = ", ".join(f"{key} {value:.4f}" for key, value in result["summary"].items())
        console.print(f"{name}: {summary} over {result['n_problems']} problems -> [bold]{path}[/]", highlight=False)
        summaries[name] = {"path": str(path), "summary": result["summary"]}

    try:
        run_eval(request, run_dir=run, hf_model=hf_model, out_dir=out, device=device, on_result=report)
    except SandboxUnavailable as err:
        console.print(f"[bold red]error:[/] {err}\n(wmtp eval: --unsafe runs without isolation)", highlight=False)
        raise typer.Exit(2) from None
    print(json.dumps(summaries))


@bench_app.command("sandbox")
def bench_sandbox_cmd(
    n: Annotated[int, typer.Option(help="Runs per measurement.")] = 50,
    workers: Annotated[int | None, typer.Option(help="Threads of the parallel measurement (default: CPUs).")] = None,
    humaneval: Annotated[bool, typer.Option(help="Also time all 164 HumanEval canonical solutions.")] = True,
) -> None:
    """Sandboxed vs unsafe execution: latency, programs per second, HumanEval canonical wall time."""
    from wmtp.bench.sandbox import bench_sandbox

    print(json.dumps(bench_sandbox(n, workers=workers, humaneval=humaneval)))


@app.command("generate")
@_user_errors
def generate_(
    run: Annotated[Path, typer.Option(help="wmtp run directory (or a model directory): decodes RUN/model.")],
    prompt: Annotated[str, typer.Option(help="Text to complete (encoded like training records: [bos] + text).")],
    speculative: Annotated[bool, typer.Option("--speculative", help="Self-speculative decoding: heads 2..H draft, "
                                              "head 1 verifies (same output as greedy).")] = False,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens generated at most (stops at eos).")] = 128,
) -> None:
    """Greedy completion of one prompt by head 1; prints the completion (stdout) and, with --speculative, the
    decoding stats as JSON (stderr)."""
    from wmtp.eval.evaluate import load_eval_model
    from wmtp.eval.speculative import complete

    model, tokenizer, _ = load_eval_model(run_dir=run)
    texts, stats = complete(model, tokenizer, [prompt], max_new_tokens=max_new_tokens, speculative=speculative)
    print(texts[0])
    if speculative:
        console.print(f"speculative: {json.dumps(stats.to_dict())}", highlight=False)


@bench_app.command("decode")
@_user_errors
def bench_decode(
    run: Annotated[Path, typer.Option(help="wmtp run directory (its model/ and test prompts).")],
    prompts: Annotated[int, typer.Option(min=1, help="Distinct test-split prompts decoded.")] = 20,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens per prompt at most (stops at eos).")] = 128,
    threads: Annotated[int, typer.Option(min=1, help="torch intra-op threads (the same for every decoder).")] = 1,
    hf_generate: Annotated[bool, typer.Option(help="Also time HF generate (greedy) as a reference.")] = True,
) -> None:
    """Plain greedy vs self-speculative decoding, same prompts and process: tokens/s, tokens per forward,
    acceptance per head, speedup."""
    from wmtp.bench.decode import run_decode_bench

    print(json.dumps(run_decode_bench(run, n_prompts=prompts, max_new_tokens=max_new_tokens, threads=threads,
                                      hf_generate=hf_generate)))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
