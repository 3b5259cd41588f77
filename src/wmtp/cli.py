"""The `wmtp` command line: each command loads a config, calls into the modules, writes a run directory."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from wmtp.config import ConfigError, load_config
from wmtp.demo import DEMO_BASE_STEPS, DEMO_METHODS, DEMO_SEEDS

app = typer.Typer(help="Weighted Multi-Token Prediction: train, evaluate and benchmark.", no_args_is_help=True)
bench_app = typer.Typer(help="Performance benchmarks; each prints one JSON object on its last line.")
app.add_typer(bench_app, name="bench")
data_app = typer.Typer(help="Datasets: prepare CodeContests records, dataset statistics.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(stderr=True, soft_wrap=True)  # soft wrap: paths in messages stay whole

ConfigOption = Annotated[
    str | None, typer.Option("--config", "-c", help="Preset name (tiny) or YAML file; default: the tiny preset.")
]
Overrides = Annotated[list[str] | None, typer.Argument(help="Dotted overrides, e.g. optim.lr=3e-4 model.n_heads=2")]

# Options of both `wmtp demo` and `wmtp sweep` (each gives its own default).
MethodsOption = Annotated[str, typer.Option(
    help="Comma-separated methods, each WEIGHTING or CONTROL:WEIGHTING, optionally @correct / @all: shuffled:critic "
    "is a control of the critic, uniform@all uniform on correct + incorrect records.")]
SeedsOption = Annotated[str, typer.Option(help="Seeds per method: a count (5 → seeds 0..4) or a list (0,3,7).")]


def _user_errors(fn: Callable) -> Callable:
    """Turn the errors a user can fix (bad config, missing data, corrupt checkpoint) into a message + exit 2."""
    from wmtp.analysis.runs import ReportError
    from wmtp.data.records import DataError
    from wmtp.eval.sandbox import SandboxUnavailable
    from wmtp.model.checkpoints import CheckpointError
    from wmtp.train.memory import InsufficientMemory
    from wmtp.train.run import RunExistsError

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (
            ConfigError, DataError, CheckpointError, RunExistsError, SandboxUnavailable, ReportError, InsufficientMemory
        ) as err:
            console.print(f"[bold red]error:[/] {err}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


def _command(group: typer.Typer, name: str | None = None) -> Callable[[Callable], Callable]:
    """Register a function as command ``name`` (default: the function's name) of ``group``, its user errors a
    message and exit 2 (`_user_errors`)."""
    def register(fn: Callable) -> Callable:
        return group.command(name)(_user_errors(fn))

    return register


@_command(app)
def train(
    overrides: Overrides = None,
    config: ConfigOption = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in run_dir from its latest checkpoint.")] = False,
) -> None:
    """Train one run (any weighting) and write its run directory."""
    from wmtp.train.run import train_run

    cfg = load_config(config, overrides)
    run = train_run(cfg, resume=resume)
    if run.trainer.is_main:
        console.print(f"run directory: [bold]{Path(run.cfg.run_dir).resolve()}[/]")


@_command(app)
def memory(
    overrides: Overrides = None,
    config: ConfigOption = None,
    world_size: Annotated[int, typer.Option(min=1, help="Devices (FSDP ranks under torchrun) of the run.")] = 1,
    device_gib: Annotated[float | None, typer.Option(help="Memory per device (GiB) to check against.")] = None,
) -> None:
    """Memory estimate per device (parameters, gradients, AdamW state, activations) from the config alone: the
    model is built on the meta device, no weights are read. Exit 2 when it exceeds --device-gib."""
    from wmtp.train.memory import GIB, check_fits, estimate_memory, model_for_estimate

    cfg = load_config(config, overrides)
    estimate = estimate_memory(model_for_estimate(cfg), cfg, world_size=world_size)
    print(estimate.table())
    if device_gib is not None:
        check_fits(estimate, available=int(device_gib * GIB), cfg=cfg)


@_command(app, "score-ref")
def score_ref(overrides: Overrides = None, config: ConfigOption = None) -> None:
    """Score every train/valid record with the weighting's reference (weighting.rho1.reference) into its CE cache.

    Resumable: shards already written are kept. Run it with the same config and overrides as the training.
    """
    from wmtp.weighting.reference_scores import score_reference

    cfg = load_config(config, overrides)
    directory, done = score_reference(cfg)
    console.print(
        f"reference cache: [bold]{directory.resolve()}[/] ({len(done['computed'])} shards scored, "
        f"{len(done['skipped'])} reused)"
    )


@_command(app)
def demo(
    overrides: Overrides = None,
    config: ConfigOption = None,
    run_dir: Annotated[str, typer.Option(help="Where the demo writes its runs and report.")] = "runs/demo",
    methods: MethodsOption = ",".join(DEMO_METHODS),
    seeds: SeedsOption = str(DEMO_SEEDS),
    workers: Annotated[int, typer.Option(min=1, help="Runs trained at once, each in its own process.")] = 2,
    base_steps: Annotated[int, typer.Option(min=0, help="Steps of the shared uniform base model every method "
                                                        "fine-tunes (0: every run starts from random init).")] = DEMO_BASE_STEPS,
    progress: Annotated[bool, typer.Option(help="Progress bar.")] = True,
) -> None:
    """The main job: embedded synthetic data → uniform, critic and Rho-1 weighted MTP (tiny model, CPU), the
    shuffled control of each weighted method and uniform on the critic's data, × seeds → greedy pass@1 on the test
    split → report.md / report.html with confidence intervals, tests against uniform and the controls, and MDEs."""
    from wmtp.demo import DemoFailed, run_demo
    from wmtp.sweep import parse_seeds

    try:
        report = run_demo(config, overrides or [], run_dir=run_dir, methods=_csv(methods), seeds=parse_seeds(seeds),
                          workers=workers, base_steps=base_steps, progress=progress)
    except DemoFailed as err:
        console.print(f"[bold red]error:[/] runs failed: {err}\n(run the demo again to resume them)", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"report: [bold]{report.resolve()}[/]")


@_command(app)
def sweep(
    overrides: Overrides = None,
    config: ConfigOption = None,
    out: Annotated[str, typer.Option(help="Sweep directory (one run directory per method/grid point/seed).")] = "runs/sweep",
    methods: MethodsOption = "uniform,critic,rho1",
    seeds: SeedsOption = "5",
    grid: Annotated[list[str] | None, typer.Option(help="KEY=V1,V2 (repeatable): ablation values; a key under "
                                                        "weighting.rho1./weighting.critic. varies only that method.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Runs at once, each in its own process (1: in sequence).")] = 1,
    base_steps: Annotated[int, typer.Option(min=0, help="First train a uniform base model this long; every run "
                                                        "starts from it (model.init_from). 0: no base.")] = 0,
    evaluate: Annotated[bool, typer.Option(help="Greedy pass@1 on the test split and per-head accuracy.")] = True,
    progress: Annotated[bool, typer.Option(help="Progress bar.")] = True,
) -> None:
    """Methods × seeds × grid, same data split and step budget; resumable (finished runs are skipped, a killed
    one continues from its checkpoint). Then `wmtp report OUT`."""
    from wmtp.sweep import parse_grid, parse_seeds, plan_sweep, run_sweep_with_progress

    plan = plan_sweep(config, overrides or [], out_dir=out, methods=_csv(methods), seeds=parse_seeds(seeds),
                      grid=parse_grid(grid or []), base_steps=base_steps)
    results = run_sweep_with_progress(plan, workers=workers, evaluate=evaluate, show=progress)
    failed = [name for name, r in results.items() if "error" in r]
    console.print(f"sweep: {len(results) - len(failed)} done, {len(failed)} failed -> [bold]{Path(out).resolve()}[/]")
    if failed:
        raise typer.Exit(1)


@_command(app)
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run directories, or directories holding them (a sweep).")],
    out: Annotated[Path | None, typer.Option(help="Output directory; default: the first RUNS argument.")] = None,
    target_loss: Annotated[float | None, typer.Option(help="Val loss of 'steps to target' (default: the worst "
                                                          "final val loss).")] = None,
) -> None:
    """Compare run directories: report.md, report.html, report.json and PNG figures (reads only the runs)."""
    from wmtp.analysis.report import write_report

    path = write_report(runs, out if out is not None else runs[0], target_loss=target_loss)
    console.print(f"report: [bold]{path.resolve()}[/] (and report.html)")


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


@bench_app.command("train")
def bench_train(
    vocab: Annotated[int, typer.Option(help="Vocabulary size.")] = 32000,
    seq: Annotated[int, typer.Option(help="Sequence length.")] = 1024,
    d_model: Annotated[int, typer.Option(help="Hidden size.")] = 256,
    n_layers: Annotated[int, typer.Option(help="Trunk blocks (incl. head 1).")] = 4,
    n_heads: Annotated[int, typer.Option(help="MTP heads of the multi-token model.")] = 4,
    batch: Annotated[int, typer.Option(min=1, help="Sequences per micro-batch.")] = 1,
    steps: Annotated[int, typer.Option(min=1, help="Timed optimizer steps per variant in each round.")] = 2,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds (every variant times --steps steps in "
                                        "each, order rotated).")] = 6,
    grad_accum: Annotated[int, typer.Option(min=1, help="Micro-batches per optimizer step (the trainer's path: "
                                            "raw weights of all first when > 1).")] = 1,
    weighting: Annotated[str, typer.Option(help="Also time MTP with this weighting vs uniform: rho1 (cached "
                                           "reference) or critic (stage 2: value head + value loss).")] = "uniform",
) -> None:
    """Step time and memory: NTP (H=1) vs MTP (ours) vs naive MTP, each in its own process, timed in interleaved
    rounds (medians, minima, per-round spread, raw times in the JSON)."""
    from wmtp.bench.train import run_train_bench

    try:
        result = run_train_bench(
            vocab=vocab, seq=seq, d_model=d_model, n_layers=n_layers, n_heads=n_heads, batch=batch, steps=steps,
            rounds=rounds, grad_accum=grad_accum, weighting=weighting,
        )
    except ValueError as err:  # a bad option (e.g. an unknown weighting): checked before any worker starts
        raise typer.BadParameter(str(err)) from None
    print(json.dumps(result))


# Options of both `wmtp eval` and `wmtp label` that each gives its own default.
SamplesOption = Annotated[int, typer.Option(min=1, help="Samples per problem.")]
TemperatureOption = Annotated[float, typer.Option(help="Sampling temperature (0: greedy, needs --n 1).")]
DeviceOption = Annotated[str, typer.Option(help="cpu or cuda.")]


def _request_options(
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    max_new_tokens: Annotated[int | None, typer.Option(min=1, help="Tokens generated per sample at most (default: "
                                                                  "the benchmark's, 1024 for HumanEval(+), 256 "
                                                                  "otherwise).")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    limit: Annotated[int | None, typer.Option(help="Only the first N problems of each benchmark.")] = None,
    data_file: Annotated[Path | None, typer.Option(help="Local data of the benchmark (one --bench only).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Or an HF hub dataset NAME[:CONFIG] (downloads; needs "
                                                     "`datasets`).")] = None,
    split: Annotated[str | None, typer.Option(help="Split of --dataset (default: the benchmark's).")] = None,
    n_shot: Annotated[int | None, typer.Option(help="Few-shot examples (default: MBPP 3, others 0).")] = None,
    fewshot_file: Annotated[Path | None, typer.Option(help="GSM8K / MATH few-shot rows (a train jsonl).")] = None,
    bench_option: Annotated[list[str] | None, typer.Option(
        "--bench-option", help="KEY=VALUE setting of the (single) benchmark's loader, repeatable: math style=boxed "
        "(wmtp's earlier boxed prompt), gsm8k answer_filter=flexible-extract|last-number or seed=N.")] = None,
    unsafe: Annotated[bool, typer.Option("--unsafe", help="Run generated code WITHOUT the bwrap sandbox.")] = False,
    timeout: Annotated[float | None, typer.Option(help="Per-program wall seconds (default: the benchmark's).")] = None,
    workers: Annotated[int | None, typer.Option(help="Parallel sandboxed programs (default: CPU count).")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per generation batch.")] = 16,
    progress: Annotated[bool, typer.Option(help="Progress bars.")] = True,
) -> None:
    """The options `wmtp eval` and `wmtp label` share with the same defaults (with --n and --temperature: the
    fields of wmtp.eval.options.EvalOptions), declared once; `_with_request_options` gives them to both."""


def _with_request_options(command: Callable) -> Callable:
    """`command` with the parameters of `_request_options` after its own (typer reads the signature). They reach
    the command only through its context's params (`_eval_options(ctx.params)`), so it is called without them."""
    shared = inspect.signature(_request_options, eval_str=True).parameters
    own = inspect.signature(command, eval_str=True)

    @wraps(command)
    def with_options(**kwargs: Any) -> Any:
        return command(**{key: value for key, value in kwargs.items() if key not in shared})

    with_options.__signature__ = own.replace(parameters=[*own.parameters.values(), *shared.values()])
    return with_options


def _eval_options(params: dict[str, Any]) -> dict[str, Any]:
    """The EvalOptions fields from the shared options of `wmtp eval` / `wmtp label` (their context's params)."""
    from wmtp.eval.generate import SamplingConfig

    sampling = SamplingConfig(temperature=params["temperature"], top_p=params["top_p"], n=params["n"],
                              max_new_tokens=params["max_new_tokens"], seed=params["seed"],
                              speculative=params.get("speculative", False))
    paths = {key: None if params[key] is None else str(params[key]) for key in ("data_file", "fewshot_file")}
    same = ("limit", "dataset", "split", "n_shot", "unsafe", "workers", "batch_size", "progress")
    options = []
    for item in params["bench_option"] or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--bench-option {item!r} is not of the form KEY=VALUE")
        options.append((key.strip(), value.strip()))
    return {"sampling": sampling, **paths, **{key: params[key] for key in same}, "timeout_s": params["timeout"],
            "bench_options": tuple(options)}


def _checked(build: Callable[[], Any]) -> Any:
    """The request ``build`` returns; a ValueError is a message and exit 2. Warns when code will run unsandboxed."""
    try:
        request = build()
    except ValueError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(2) from None
    if request.unsafe:
        console.print("[bold red]warning:[/] --unsafe: generated programs run WITHOUT isolation, with your rights",
                      highlight=False)
    return request


@_command(app, "eval")
@_with_request_options
def eval_(
    ctx: typer.Context,
    bench: Annotated[str, typer.Option(help="Comma-separated: synthetic, humaneval, humaneval_plus, mbpp, "
                                            "codecontests, gsm8k, math, hellaswag.")],
    run: Annotated[Path | None, typer.Option(help="wmtp run directory: evaluates RUN/model, writes RUN/eval/.")] = None,
    hf_model: Annotated[str | None, typer.Option(help="Or an HF causal LM (path or hub name; needs --out).")] = None,
    out: Annotated[Path | None, typer.Option(help="Directory of the <bench>.json files; default RUN/eval.")] = None,
    n: SamplesOption = 1,
    k: Annotated[str, typer.Option(help="Comma-separated k of pass@k (k > n is dropped).")] = "1,10,100",
    temperature: TemperatureOption = 0.0,
    device: DeviceOption = "cpu",
    speculative: Annotated[bool, typer.Option(
        "--speculative", help="Self-speculative decoding with the MTP heads, fewer forwards (greedy: the same tokens; "
        "--temperature > 0: the same distribution).")] = False,
) -> None:
    """Evaluate a run (or an HF model) on benchmarks; writes <out>/<bench>.json, prints a JSON summary last."""
    from wmtp.eval.evaluate import EvalRequest, run_eval
    from wmtp.eval.sandbox import SandboxUnavailable

    def build() -> EvalRequest:
        ks = tuple(sorted({int(x) for x in k.split(",") if x.strip()}))
        request = EvalRequest(benches=tuple(_csv(bench)), ks=ks, **_eval_options(ctx.params))
        if (run is None) == (hf_model is None):
            raise ValueError("pass exactly one of --run RUN_DIR or --hf-model NAME")
        if hf_model is not None and out is None:
            raise ValueError("with --hf-model, pass --out DIR for the result files")
        return request

    request = _checked(build)
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


@_command(app, "generate")
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


@_command(app, "export-hf")
def export_hf(
    run: Annotated[Path, typer.Option(help="wmtp run directory (its model/) or a model directory.")],
    out: Annotated[Path, typer.Option(help="Output directory: config.json, model.safetensors, tokenizer files.")],
) -> None:
    """Write head 1 of a trained MTP model as a plain HF causal LM (AutoModelForCausalLM.from_pretrained(OUT))."""
    from wmtp.eval.evaluate import load_eval_model
    from wmtp.model.hf_export import export_head1

    model, tokenizer, _ = load_eval_model(run_dir=run)
    console.print(f"HF causal LM (head 1): [bold]{export_head1(model, out, tokenizer).resolve()}[/]")


@bench_app.command("decode")
@_user_errors
def bench_decode(
    run: Annotated[Path, typer.Option(help="wmtp run directory (its model/ and test prompts).")],
    prompts: Annotated[int, typer.Option(min=1, help="Distinct test-split prompts decoded.")] = 20,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens per prompt at most (stops at eos).")] = 128,
    threads: Annotated[int, typer.Option(min=1, help="torch intra-op threads (the same for every decoder).")] = 1,
    hf_generate: Annotated[bool, typer.Option(help="Also time HF generate (greedy and sampled) as references.")] = True,
    repeats: Annotated[int, typer.Option(min=1, help="Interleaved repeats (medians and spreads over them).")] = 5,
    temperature: Annotated[float, typer.Option(help="Temperature of the sampled variants (> 0).")] = 0.8,
    top_p: Annotated[float, typer.Option(help="top_p of the sampled variants, in (0, 1].")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the sampled variants (repeat r uses seed + r).")] = 0,
    n_draft: Annotated[int | None, typer.Option(min=0, help="Draft heads (default: all contiguous heads).")] = None,
) -> None:
    """Self-speculative vs plain KV-cached decoding (greedy and sampled) and HF generate, interleaved repeats:
    tokens/s (median, spread, raw times), speedups, tokens per forward, acceptance per head, identical outputs."""
    from wmtp.bench.decode import run_decode_bench

    try:
        result = run_decode_bench(run, n_prompts=prompts, max_new_tokens=max_new_tokens, threads=threads,
                                  hf_generate=hf_generate, repeats=repeats, temperature=temperature, top_p=top_p,
                                  seed=seed, n_draft=n_draft)  # fmt: skip
    except ValueError as err:  # bad --n-draft / --temperature / --top-p for this model
        console.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(2) from None
    print(json.dumps(result))


@_command(data_app, "stats")
def data_stats_cmd(
    overrides: Overrides = None,
    config: ConfigOption = None,
    out: Annotated[Path | None, typer.Option(help="Where stats.json and token_lengths.png go (default: "
                                                   "<data dir>/stats).")] = None,
) -> None:
    """Records, problems, correct ratio, per-difficulty/source counts and token lengths of every split of the
    config's data (e.g. data.path=DIR), tokenised as training would; prints the JSON."""
    from wmtp.data.stats import data_stats

    stats, directory = data_stats(load_config(config, overrides).data, out)
    console.print(f"statistics: [bold]{directory.resolve()}[/]")
    print(json.dumps(stats))


@_command(data_app, "codecontests")
def data_codecontests(
    out: Annotated[Path, typer.Option(help="Directory of train/valid(/test).jsonl and prepare.json.")],
    source: Annotated[str, typer.Option(help="Hub dataset name (needs `datasets`) or a local parquet/arrow file "
                                             "or directory.")] = "deepmind/code_contests",
    split: Annotated[str, typer.Option(help="Split of the source that is read.")] = "train",
    languages: Annotated[str, typer.Option(help="Comma-separated: python3, python2, cpp, java.")] = "python3",
    max_records: Annotated[int | None, typer.Option(help="Fixed-seed subsample size (default 100000; 0 keeps all).")]
    = 100_000,
    max_per_problem: Annotated[int | None, typer.Option(help="At most this many correct and this many incorrect "
                                                            "solutions per problem.")] = None,
    valid_fraction: Annotated[float, typer.Option(help="Fraction of problems in valid.")] = 0.05,
    test_fraction: Annotated[float, typer.Option(help="Fraction of problems in test.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seeds the problem split and the subsample.")] = 0,
) -> None:
    """CodeContests → records (correct and incorrect solutions, split by problem); prints the report."""
    from pydantic import ValidationError

    from wmtp.data.codecontests import CodeContestsConfig, prepare_codecontests

    try:
        cfg = CodeContestsConfig(
            source=source, split=split, languages=[x.strip() for x in languages.split(",") if x.strip()],
            max_records=max_records or None, max_per_problem=max_per_problem, valid_fraction=valid_fraction,
            test_fraction=test_fraction, seed=seed,
        )
    except ValidationError as err:
        raise ConfigError(str(err)) from None
    report = prepare_codecontests(cfg, out)
    console.print(f"records: [bold]{out.resolve()}[/] (train with data.path={out})")
    print(json.dumps(report))


@_command(app, "label")
@_with_request_options
def label_cmd(
    ctx: typer.Context,
    bench: Annotated[str, typer.Option(help="synthetic, humaneval, humaneval_plus, mbpp, codecontests, gsm8k "
                                            "or math.")],
    out: Annotated[Path, typer.Option(help="Output directory (records.jsonl); rerunning into it resumes.")],
    run: Annotated[Path | None, typer.Option(help="wmtp run (or model) directory that samples.")] = None,
    hf_model: Annotated[str | None, typer.Option(help="Or an HF causal LM (path or hub name).")] = None,
    n: SamplesOption = 4,
    temperature: TemperatureOption = 0.8,
    chunk: Annotated[int, typer.Option(min=1, help="Problems per shard (the unit of resumption).")] = 64,
    device: DeviceOption = "cpu",
) -> None:
    """Sample completions of a benchmark's problems and label each by execution in the sandbox (code) or by its
    answer (math): records with is_correct, resumable. Prints a JSON summary."""
    from wmtp.eval.label import LabelRequest, label

    def build() -> LabelRequest:
        if (run is None) == (hf_model is None):
            raise ValueError("pass exactly one of --run RUN_DIR or --hf-model NAME")
        return LabelRequest(bench=bench, chunk_problems=chunk, **_eval_options(ctx.params))

    summary = label(_checked(build), out_dir=out, run_dir=run, hf_model=hf_model, device=device)
    console.print(f"records: [bold]{summary['path']}[/]")
    print(json.dumps(summary))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
