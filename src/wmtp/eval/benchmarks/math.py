r"""MATH (Hendrycks et al., 2021) and MATH-500: competition problems, graded by the final boxed answer.

Data: a jsonl of ``problem`` and ``solution`` (and, in MATH-500, ``answer``, ``subject``, ``level``,
``unique_id``), or a hub dataset such as ``HuggingFaceH4/MATH-500`` (split ``test``). The reference is
``answer`` when present, else the last ``\boxed{...}`` of ``solution``.
Prompt: ``Problem:\n...\n\nSolution:`` after an instruction to box the final answer, optionally after
``n_shot`` solved examples from a few-shot file in the same schema. Stop: the next ``Problem:``.
Grade: the content of the completion's last ``\boxed{...}`` (braces matched) is equivalent to the reference
according to ``math-verify`` (symbolic and numeric: ``\frac{1}{2}`` = ``0.5``); only when math-verify cannot
parse one of the two does a normalised string comparison decide.

math-verify gets the two LaTeX strings only, never the completion as Python: its plain-expression mode
would hand model output to sympy's ``parse_expr``, which evaluates Python. It bounds each comparison with
SIGALRM, so grading runs in the main thread.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from wmtp.data.records import DataError
from wmtp.eval.benchmarks.base import Benchmark, Problem, load_with
from wmtp.eval.benchmarks.rows import require_keys, rows_from

STOP = ("\nProblem:",)
INSTRUCTION = "Solve the problem. Put the final answer in \\boxed{}."
_BOX_COMMANDS = ("\\boxed", "\\fbox")
_TIMEOUT_S = 5  # math-verify's bound on one parse or comparison


def last_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{...}`` (or ``\fbox{...}``, or ``\boxed x``) with nested braces matched;
    None when there is none or its braces never close."""
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    if start < 0:
        return None
    i = start + len("\\boxed" if text.startswith("\\boxed", start) else "\\fbox")
    if text.startswith(" ", i):  # "\boxed 5": the argument is the next token
        match = re.match(r" +([^\s$]+)", text[i:])
        return match.group(1) if match else None
    if not text.startswith("{", i):
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{" and text[j - 1] != "\\":
            depth += 1
        elif text[j] == "}" and text[j - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def normalize_answer(text: str) -> str:
    r"""String form for the fallback comparison: no spaces, sizing and spacing commands, ``\text{}`` wrappers,
    dollar signs, degree marks or trailing period; ``\dfrac``/``\tfrac`` → ``\frac``."""
    text = re.sub(r"\\text\{(.*?)\}", r"\1", text)
    for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\ ", ""),
                     ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("^\\circ", ""), ("^{\\circ}", ""),
                     ("\\$", ""), ("$", "")):
        text = text.replace(old, new)
    return re.sub(r"\s+", "", text).rstrip(".")


@lru_cache(maxsize=4096)
def _parse(latex: str) -> tuple:
    from math_verify import LatexExtractionConfig, parse

    parsed = parse(f"\\boxed{{{latex}}}", extraction_config=[LatexExtractionConfig(boxed_match_priority=0)],
                   fallback_mode="no_fallback", parsing_timeout=_TIMEOUT_S)
    return tuple(parsed)


def is_equivalent(prediction: str | None, reference: str) -> bool:
    """math-verify equivalence of two answers (LaTeX, no ``\\boxed``), normalised string match if either
    does not parse."""
    if prediction is None:
        return False
    from math_verify import verify

    gold, pred = _parse(reference), _parse(prediction)
    if gold and pred:
        return bool(verify(list(gold), list(pred), timeout_seconds=_TIMEOUT_S))
    return normalize_answer(prediction) == normalize_answer(reference)


def reference_of(row: dict[str, Any]) -> str:
    if row.get("answer") not in (None, ""):
        return str(row["answer"])
    boxed = last_boxed(row.get("solution", ""))
    if boxed is None:
        raise DataError(f"math: row {row.get('unique_id', '?')!r} has no answer and no \\boxed{{}} in its solution")
    return boxed


def problem_prompt(problem: str) -> str:
    return f"Problem:\n{problem.strip()}\n\nSolution:"


def load_math(
    data_file: str | Path | None = None,
    *,
    dataset: str | None = None,
    split: str | None = "test",
    n_shot: int = 0,
    fewshot_file: str | Path | None = None,
) -> list[Problem]:
    """MATH problems (ids: ``unique_id`` when present, else ``math/<row>``), reference answers resolved."""
    try:  # checked before any generation, not when the first answer is graded
        import math_verify  # noqa: F401
    except ImportError:
        raise DataError("math needs the math-verify package: `pip install math-verify`") from None
    rows = rows_from(data_file=data_file, dataset=dataset, split=split or "test", benchmark="math")
    prefix = INSTRUCTION + "\n\n"
    if n_shot > 0:
        if fewshot_file is None:
            raise DataError("math: n_shot > 0 needs a few-shot file (--fewshot-file) of problem/solution rows")
        shots = rows_from(data_file=fewshot_file, dataset=None, split=None, benchmark="math few-shot")
        if n_shot > len(shots):
            raise DataError(f"math: n_shot={n_shot} but {fewshot_file} has only {len(shots)} rows")
        require_keys(shots[:n_shot], ("problem", "solution"), benchmark="math few-shot")
        prefix += "".join(f"{problem_prompt(r['problem'])}\n{r['solution'].strip()}\n\n" for r in shots[:n_shot])
    return problems_of(rows, prefix)


def problems_of(rows: Sequence[Mapping[str, Any]], prefix: str = INSTRUCTION + "\n\n") -> list[Problem]:
    """One problem per row (ids: ``unique_id`` when present, else ``math/<row>``), reference answers resolved,
    its prompt after ``prefix`` (the instruction and the few-shot examples)."""
    require_keys(rows, ("problem",), benchmark="math")
    problems = []
    for i, r in enumerate(rows):
        info = {"reference": reference_of(r), **{k: r[k] for k in ("subject", "level") if k in r}}
        problem_id = str(r.get("unique_id") or f"math/{i}")
        problems.append(Problem(problem_id, prefix + problem_prompt(r["problem"]), info=info))
    return problems


def is_correct(problem: Problem, completion: str) -> bool:
    return is_equivalent(last_boxed(completion), problem.info["reference"])


BENCHMARK = Benchmark(
    name="math", load=load_with(load_math, "n_shot", "fewshot_file"), from_rows=problems_of, stop=STOP,
    is_correct=is_correct, answer=last_boxed,
)
