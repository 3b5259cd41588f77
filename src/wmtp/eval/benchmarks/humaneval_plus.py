"""HumanEval+ (Liu et al., 2023, EvalPlus v0.1.10): HumanEval's 164 problems graded by differential testing on
their base inputs (HumanEval's own tests) and on EvalPlus's extra "plus" inputs.

Reference: evalplus/evalplus at commit 26d6d00bb1fd0fa37f39c99d5290da67891d1c5e, ``evalplus/evaluate.py``
(``get_groundtruth``, ``check_correctness``, pass@k), ``evalplus/eval/__init__.py`` (``untrusted_check``,
``unsafe_execute``, ``is_floats``), ``evalplus/eval/_special_oracle.py`` (``_poly``), ``evalplus/gen/util``
(``trusted_exec``) and ``evalplus/config.py`` (time limits). The semantics carried over:

* Expected outputs are those of ``prompt + canonical_solution`` on each input (the ``contract`` is not part of
  it: EvalPlus uses contracts only to validate generated inputs, ``evalplus/inputgen.py``), each call on a deep
  copy of its input, timed. Here they are computed in the sandbox once per problem and cached in memory.
* A completion's program is ``prompt + completion``, ``exec``-ed in a fresh globals dict (so ``__name__`` is not
  ``"__main__"``), with stdout/stderr swallowed; then the entry point is called on each input in order and the
  run stops at the first failure. An input fails if the call raises (anything, ``SystemExit`` included), takes
  longer than ``max(4 s, 4 × the canonical's time)``, or its output does not match.
* Match: ``out == expected``; otherwise, when the tolerance is non-zero, ``type(out) == type(expected)``, equal
  lengths for lists/tuples, and ``np.allclose(out, expected, rtol=1e-07, atol=atol)``. The tolerance starts at
  the row's ``atol`` and becomes 1e-6 for the rest of the run at the first expected output that ``is_floats``
  (a float, or a non-empty list/tuple of floats) while it is 0, as EvalPlus's loop variable does.
  numpy is not in the sandbox's interpreter, so ``allclose`` is written out: ``|out - exp| <= atol + rtol·|exp|``
  elementwise over equal-length (nested) sequences of numbers, infinities close only to themselves, NaN to
  nothing; anything else (strings, None, ragged shapes numpy would broadcast) is not close.
* ``find_zero`` (HumanEval/32) passes an input when ``|poly(xs, out)| <= atol`` (EvalPlus's special oracle).
* Base and plus inputs run as two separate programs (EvalPlus: two processes), each under ``single_run`` (so
  it passes only if it ran to its end); the plus verdict is base and plus both passing. The whole run is bounded by the sandbox's timeout (EvalPlus: ``min(60, Σ limits) + 1`` s,
  hence the default of 61 s).

Not carried over: EvalPlus's ``reliability_guard`` (it disables ``os.system``, ``subprocess`` and the like in
the process; here the sandbox contains programs instead) and its 4 GiB memory cap (here ``memory_mb``).

Data: ``--data-file HumanEvalPlus.jsonl.gz`` (EvalPlus's release ``evalplus/humanevalplus_release`` v0.1.10;
in this workspace ``../shared/data/HumanEvalPlus.jsonl.gz``) or a hub dataset with the same fields.
Prompt and stops: HumanEval's. ``wmtp eval`` reports pass@k on base + plus; :func:`grade_base` gives the base
verdicts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from wmtp.data.records import DataError
from wmtp.eval.benchmarks import humaneval
from wmtp.eval.benchmarks.base import Benchmark, Check, Checks, Problem, SandboxSettings, load_with, single_run
from wmtp.eval.benchmarks.harness import grade_problems
from wmtp.eval.benchmarks.humaneval import STOP
from wmtp.eval.benchmarks.rows import read_rows, rows_from
from wmtp.eval.sandbox import run_python

KEYS = ("task_id", "prompt", "entry_point", "canonical_solution", "base_input", "plus_input", "atol")
RTOL = 1e-07  # untrusted_check: "explicitly set rtol=1e-07 to match np.testing.assert_allclose"
FLOAT_ATOL = 1e-6  # unsafe_execute: the tolerance enforced for float outputs when the row's atol is 0
MIN_TIME_LIMIT_S = 4.0  # evalplus/config.py DEFAULT_MIN_TIME_LIMIT
TIME_LIMIT_FACTOR = 4.0  # evalplus/config.py DEFAULT_GT_TIME_LIMIT_FACTOR
REFERENCE_OUTPUT_BYTES = 256 << 20  # stdout kept of a canonical solution's run (HumanEval/15's is 147 MB)
DATA_HINT = (
    "humaneval_plus needs the HumanEval+ v0.1.10 data: --data-file HumanEvalPlus.jsonl.gz (from the EvalPlus "
    "release, github.com/evalplus/humanevalplus_release; in this workspace ../shared/data/HumanEvalPlus.jsonl.gz), "
    "or a --dataset with the same fields"
)

# The trusted part of every sandboxed program: EvalPlus's comparison (see the module docstring), its per-input
# time limit, and the swallowing of the program's I/O. Helpers are bound as default arguments of `_run`, so a
# completion that rebinds this module's globals does not change the grader.
_RUNTIME = r'''
import contextlib, copy, io, json, math, os, signal, sys, time

inf, nan = float("inf"), float("nan")


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def _is_floats(x):
    if isinstance(x, float):
        return True
    return isinstance(x, (list, tuple)) and bool(x) and all(isinstance(i, float) for i in x)


def _close(out, exp, atol, rtol):
    numbers = (int, float)
    if isinstance(out, numbers) and isinstance(exp, numbers):
        if math.isinf(out) or math.isinf(exp):
            return out == exp
        return abs(out - exp) <= atol + rtol * abs(exp)
    if isinstance(out, (list, tuple)) and isinstance(exp, (list, tuple)) and len(out) == len(exp):
        return all(_close(o, e, atol, rtol) for o, e in zip(out, exp))
    return False


def _matches(out, exp, atol, rtol):
    if out == exp:
        return True
    if atol == 0 or type(out) is not type(exp):
        return False
    return _close(out, exp, atol, rtol)


def _poly(xs, x):
    return sum([coeff * math.pow(x, i) for i, coeff in enumerate(xs)])


@contextlib.contextmanager
def _swallowed_io():
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


@contextlib.contextmanager
def _time_limit(seconds):
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _plain(x):
    """Whether JSON gives back exactly this value and its types (no tuples, sets, huge ints, non-str keys)."""
    if x is None or type(x) in (bool, float, str):
        return True
    if type(x) is int:
        return -(1 << 63) <= x < 1 << 63
    if type(x) is list:
        return all(map(_plain, x))
    return type(x) is dict and all(type(k) is str and _plain(v) for k, v in x.items())


def _source(x):
    """Python source of a value, linear in its size: huge integers in hex (decimal conversion is quadratic)."""
    if type(x) is int and not -(1 << 64) < x < 1 << 64:
        return hex(x)
    if type(x) is list:
        return "[" + ", ".join(map(_source, x)) + "]"
    if type(x) is tuple:
        return "(" + "".join(_source(i) + ", " for i in x) + ")"
    return repr(x)


def _encode(x):
    """One line standing for a value: "j" + JSON when JSON is exact (fast to read back: some outputs are
    100 MB), else "p" + Python source."""
    text = "j" + json.dumps(x) if _plain(x) else "p" + _source(x)
    back = _decode(text)
    if "\n" in text or not (back == x or _encode(back) == text):
        raise ValueError(f"output {text[:200]} does not survive encoding")
    return text


def _decode(line):
    return json.loads(line[1:]) if line[0] == "j" else eval(line[1:])


def _stdin():
    """All of fd 0, read directly: `single_run`'s `run_to_end` replaces `sys.stdin` but leaves fd 0 open."""
    chunks = []
    while chunk := os.read(0, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks).decode()


def _entry(source, entry_point, swallowed_io=_swallowed_io):
    namespace = {}
    with swallowed_io():
        exec(compile(source, "<solution>", "exec"), namespace)
    return namespace[entry_point]
'''

_CANDIDATE = r'''
def _run(fn, inputs, expected, limits, atol, special, time_limit=_time_limit, swallowed_io=_swallowed_io,
         is_floats=_is_floats, matches=_matches, poly=_poly, rtol=_RTOL, float_atol=_FLOAT_ATOL):
    for inp, exp, limit in zip(inputs, expected, limits):
        with time_limit(limit), swallowed_io():
            out = fn(*inp)
        if special:  # HumanEval/32 find_zero: any root within atol
            if not abs(poly(*inp, out)) <= atol:
                return False
            continue
        if atol == 0 and is_floats(exp):
            atol = float_atol
        if not matches(out, exp, atol, rtol):
            return False
    return True


def _verdict(exit=os._exit, entry=_entry, run=_run):
    try:  # everything the grader reads is read before the completion runs
        expected = [_decode(line) for line in _stdin().splitlines()]
        tests = (json.loads(_INPUTS), expected, _LIMITS, _ATOL, _ENTRY_POINT == "find_zero")
        ok = run(entry(_SOLUTION, _ENTRY_POINT), *tests)
    except BaseException:
        ok = False
    if not ok:
        exit(1)


_verdict()
'''

_CANONICAL = r'''
def _reference(entry=_entry, encode=_encode):
    fn = entry(_SOLUTION, _ENTRY_POINT)
    outputs, times = [], []
    for inp in json.loads(_INPUTS):
        inp = copy.deepcopy(inp)
        with _swallowed_io():
            start = time.time()
            out = fn(*inp)
            times.append(time.time() - start)
        outputs.append(encode(out))
    sys.stdout.write(json.dumps(times) + "\n" + "".join(line + "\n" for line in outputs))


_reference()
'''


@dataclass(frozen=True)
class Reference:
    """The canonical solution's results on one input set: its outputs, one line each (``_encode``: JSON when
    exact, else Python source), given to the completion's program on stdin (they can be too large for the
    sandbox's /tmp), and the time limit each input gets (EvalPlus: ``max(4 s, 4 × canonical time)``)."""

    outputs: str
    limits: tuple[float, ...]


_REFERENCES: dict[str, Reference] = {}  # by the digest of what determines them (reference_key)


def problems_of(rows: Sequence[Mapping[str, Any]]) -> list[Problem]:
    """One problem per HumanEval+ row (its prompt as is), in row order."""
    return humaneval.problems_of(rows, keys=KEYS, benchmark="humaneval_plus")


def load_humaneval_plus(
    data_file: str | Path | None = None, *, dataset: str | None = None, split: str | None = "test"
) -> list[Problem]:
    """HumanEval+ problems, in file order, from a local file or a hub dataset (the package bundles none).

    Raises:
        DataError: neither is given (the message says where the data is), or the rows lack a field.
    """
    if data_file is None and dataset is None:
        raise DataError(DATA_HINT)
    rows = read_rows(data_file) if dataset is None else rows_from(
        data_file=None, dataset=dataset, split=split or "test", benchmark="humaneval_plus")
    return problems_of(rows)


def _program(row: Mapping[str, Any], source: str, inputs: Sequence[Any], body: str, **constants: Any) -> str:
    """A sandboxed program: the runtime, the constants it reads (as Python literals), then ``body``."""
    lines = [_RUNTIME, f"_SOLUTION = {source!r}", f"_ENTRY_POINT = {row['entry_point']!r}",
             f"_INPUTS = {json.dumps(inputs)!r}", f"_RTOL = {RTOL!r}", f"_FLOAT_ATOL = {FLOAT_ATOL!r}"]
    lines += [f"{name} = {value}" for name, value in constants.items()]
    return "\n".join(lines) + "\n" + body


def reference_key(row: Mapping[str, Any], which: str) -> str:
    """The cache key of a row's reference results on its ``which`` inputs (``base`` or ``plus``)."""
    text = json.dumps([row["prompt"], row["canonical_solution"], row["entry_point"], row[f"{which}_input"]])
    return hashlib.sha256(text.encode()).hexdigest()


def reference(row: Mapping[str, Any], which: str, sandbox: SandboxSettings) -> Reference:
    """The canonical solution's outputs and the time limits on a row's ``which`` inputs, computed in the sandbox
    (EvalPlus ``get_groundtruth``: ``prompt + canonical_solution``, no contract) once per process.

    The canonical solution is trusted, so its stdout may exceed the sandbox's usual cap (some outputs are
    megabytes: HumanEval/15 on n = 10⁶), up to :data:`REFERENCE_OUTPUT_BYTES`.

    Raises:
        DataError: the canonical solution does not run to its end within the sandbox's limits.
    """
    key = reference_key(row, which)
    if key not in _REFERENCES:
        code = _program(row, row["prompt"] + row["canonical_solution"], row[f"{which}_input"], _CANONICAL)
        result = run_python(code, timeout_s=sandbox.timeout_s, memory_mb=sandbox.memory_mb, unsafe=sandbox.unsafe,
                            max_output_bytes=REFERENCE_OUTPUT_BYTES)
        if not result.ok or result.truncated:
            cause = "its output exceeds the cap" if result.truncated else f"exit {result.returncode}"
            raise DataError(f"humaneval_plus {row['task_id']}: the canonical solution failed on its {which} inputs "
                            f"({cause}): {result.stderr.strip()[-500:]}")
        times, outputs = result.stdout.split("\n", 1)
        limits = tuple(max(MIN_TIME_LIMIT_S, TIME_LIMIT_FACTOR * t) for t in json.loads(times))
        _REFERENCES[key] = Reference(outputs, limits)
    return _REFERENCES[key]


def candidate_program(row: Mapping[str, Any], completion: str, which: str, expected: Reference) -> str:
    """The program that exits 0 iff the completion passes every ``which`` input of the row, given the
    reference outputs (``expected.outputs``) on stdin."""
    return _program(row, row["prompt"] + completion, row[f"{which}_input"], _CANDIDATE,
                    _LIMITS=repr(list(expected.limits)), _ATOL=repr(row["atol"]))


def _input_set_checks(which: tuple[str, ...]) -> Checks:
    """The checks of a completion on the named input sets, in order: one ``single_run`` program each."""
    def checks(problem: Problem, completion: str, sandbox: SandboxSettings) -> list[Check]:
        runs = []
        for name in which:
            expected = reference(problem.data, name, sandbox)
            run = single_run(lambda p, c, n=name, e=expected: candidate_program(p.data, c, n, e))
            runs += [replace(check, stdin=expected.outputs) for check in run(problem, completion, sandbox)]
        return runs

    return checks


base_checks = _input_set_checks(("base",))
"""The checks of EvalPlus's base verdict: the completion passes HumanEval's base inputs."""

plus_checks = _input_set_checks(("base", "plus"))
"""The checks of EvalPlus's plus verdict (what ``wmtp eval`` and ``wmtp.eval.grade`` report): base and plus."""


BENCHMARK = Benchmark(
    name="humaneval_plus", load=load_with(load_humaneval_plus), from_rows=problems_of, stop=STOP, max_new_tokens=1024,
    checks=plus_checks, extra_verdicts={"base": base_checks}, sandbox=SandboxSettings(timeout_s=61.0, memory_mb=4096),
    default_data="none: --data-file HumanEvalPlus.jsonl.gz (EvalPlus v0.1.10) or --dataset",
)


def grade_base(
    rows: Sequence[Mapping[str, Any]], completions: Sequence[Sequence[str]], *, unsafe: bool = False,
    workers: int | None = None,
) -> list[list[bool]]:
    """EvalPlus's base verdicts of completions of HumanEval+ rows, as ``wmtp.eval.grade("humaneval_plus", ...)``
    gives the base + plus ones (same arguments)."""
    limits = replace(BENCHMARK.sandbox, unsafe=unsafe, workers=workers)
    return grade_problems(replace(BENCHMARK, checks=base_checks), problems_of(rows), completions, sandbox=limits)
