"""What `wmtp eval` and `wmtp label` are both asked: which problems, how to sample, how to run code.

:class:`EvalOptions` is extended by ``EvalRequest`` (evaluate.py) and ``LabelRequest`` (label.py); the CLI
declares its options once for both commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wmtp.eval.benchmarks.base import Benchmark, DataSource, SandboxSettings
from wmtp.eval.generate import SamplingConfig


@dataclass(frozen=True, kw_only=True)
class EvalOptions:
    """The options of a request that any benchmark reads.

    Attributes:
        sampling: temperature, top-p, n samples per problem, max new tokens, seed; each benchmark sets its own
            stop strings.
        limit: only the first ``limit`` problems of each benchmark.
        data_file / dataset / split: the data of a benchmark that needs one (a single benchmark then).
        n_shot: few-shot examples (None: the benchmark's default, 3 for MBPP, 0 otherwise).
        fewshot_file: where GSM8K / MATH few-shot examples come from.
        bench_options: (key, value) settings of the benchmark's loader (``--bench-option KEY=VALUE``; one
            benchmark then), e.g. ``("style", "boxed")`` for math.
        unsafe: run generated code WITHOUT the sandbox (passed down to ``run_python(unsafe=True)``).
        timeout_s: per-program wall limit (None: the benchmark's default); CodeContests uses the row's.
        workers: parallel sandbox runs (None: the CPU count).
        batch_size: prompts per generation batch.
        progress: progress bars.
    """

    sampling: SamplingConfig
    limit: int | None = None
    data_file: str | None = None
    dataset: str | None = None
    split: str | None = None
    n_shot: int | None = None
    fewshot_file: str | None = None
    bench_options: tuple[tuple[str, str], ...] = ()
    unsafe: bool = False
    timeout_s: float | None = None
    workers: int | None = None
    batch_size: int = 16
    progress: bool = True

    def __post_init__(self) -> None:
        if self.data_file and self.dataset:
            raise ValueError("pass either --data-file or --dataset, not both")
        if self.sampling.n < 1 or (self.sampling.max_new_tokens or 1) < 1:
            raise ValueError(f"n={self.sampling.n} and max_new_tokens={self.sampling.max_new_tokens} must be >= 1")
        if self.sampling.temperature == 0 and self.sampling.n > 1:
            raise ValueError(f"temperature 0 (greedy) gives {self.sampling.n} identical samples; "
                             "use --n 1 or --temperature > 0")
        if not 0 < self.sampling.top_p <= 1:
            raise ValueError(f"top_p={self.sampling.top_p} must be in (0, 1]")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit={self.limit} must be >= 1")

    def source(self, bench: Benchmark, run_dir: Path | None) -> DataSource:
        """Where ``bench``'s problems come from (``run_dir``: the run being evaluated, if any)."""
        return DataSource(data_file=self.data_file, dataset=self.dataset, split=self.split,
                          n_shot=bench.default_shots if self.n_shot is None else self.n_shot,
                          fewshot_file=self.fewshot_file, run_dir=run_dir, options=dict(self.bench_options))

    def sandbox(self, bench: Benchmark) -> SandboxSettings | None:
        """``bench``'s sandbox limits with the request's timeout, isolation and pool size (None: no code runs)."""
        if bench.sandbox is None:
            return None
        return SandboxSettings(timeout_s=self.timeout_s or bench.sandbox.timeout_s, memory_mb=bench.sandbox.memory_mb,
                               unsafe=self.unsafe, workers=self.workers)
