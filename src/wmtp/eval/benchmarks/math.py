r"""MATH (Hendrycks et al., 2021) and MATH-500: competition problems, graded by the final answer.

Matches lm-eval ``minerva_math`` (lm-evaluation-harness ``lm_eval/tasks/minerva_math/``, version 3.0; for MATH-500
its ``minerva_math500``) in prompt, shots, few-shot examples, stop string and answer extraction, and differs from
lm-eval's ``exact_match`` in the equivalence test only: wmtp asks math-verify where lm-eval asks sympy's
``parse_latex`` (below).

Data: a jsonl of ``problem`` and ``solution`` (and, in MATH-500, ``answer``, ``subject``, ``level``,
``unique_id``), or a hub dataset such as ``HuggingFaceH4/MATH-500`` (split ``test``).

Style ``"minerva"`` (the default, lm-eval's ``minerva_math``):

- Prompt: 4 examples (``n_shot``; lm-eval's ``num_fewshot: 4``), each ``Problem:\n<problem>\n\nSolution: <solution>``
  and a blank line, then ``Problem:\n<problem>\n\nSolution:``; no instruction, text as in the rows. The examples
  are lm-eval's four fixed Minerva examples (:data:`MINERVA_EXAMPLES`, taken in order: its ``first_n``
  sampler), or the first ``n_shot`` rows of ``--fewshot-file`` (``problem`` / ``solution`` rows).
- Stop: ``Problem:`` (lm-eval's ``until``).
- Answer: the text between ``Final Answer: The final answer is`` and ``. I hope it is correct.`` (the sentence
  the examples end with; the first one; none: wrong), normalised as lm-eval normalises it
  (:func:`normalize_final_answer`, Lewkowycz et al. 2022, app. D). A ``\boxed{}`` in the completion is not
  read (lm-eval's ``exact_match`` does not read it either).
- Reference: as lm-eval: the solution's last ``\boxed{...}`` (:func:`minerva_boxed`, lm-eval's
  ``last_boxed_only_string`` + ``remove_boxed``), normalised the same way; the ``answer`` field only when the
  row has no boxed solution. The normaliser has quirks (it removes ``ft`` from ``\left`` and ``\infty``, and
  ``3, 5, 7`` becomes ``357``); both sides get them, so this is lm-eval's reference: on MATH-500 it is not
  equivalent to the ``answer`` field for 11 of 500 rows (tests/integration/test_benchmark_data.py).
- Equivalence (differs from lm-eval): the two normalised answers are equivalent by math-verify
  (:func:`is_equivalent`, symbolic and numeric), else if their normalised strings are equal. lm-eval's
  ``is_equiv`` parses both with sympy's ``parse_latex`` (antlr4 4.11) and checks ``simplify(a - b) == 0``,
  and counts an answer sympy cannot parse as wrong even when it is identical to the reference (intervals such
  as ``[2,5)``, text answers, many tuples); math-verify compares those, so wmtp can count as right what lm-eval's
  ``exact_match`` counts wrong. Measured on MATH-500 (lm-eval's ``is_equiv`` run with sympy 1.13.3 and antlr4
  4.11): of the 500 references compared with themselves, lm-eval's test accepts 472 and wmtp's 500 (the 28 are
  tuples, intervals, matrices, ``.0000672``, ...); a wrong answer (``7``) is rejected by both for all 500.
  lm-eval's second metric, ``math_verify``, parses the whole completion and solution instead (any final
  expression, boxed or not).

Style ``"boxed"`` (wmtp's earlier prompt, not lm-eval's): an instruction to box the final answer, then the
examples as ``Problem:\n...\n\nSolution:\n<solution>`` (problem text stripped), graded by the content of the
completion's last ``\boxed{...}`` (:func:`last_boxed`, braces matched) against the row's ``answer`` (else its
solution's last box) by :func:`is_equivalent`. The answer recorded per sample (``answers``) is the Minerva one.

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
from wmtp.eval.benchmarks.fewshot import test_and_fewshot_rows
from wmtp.eval.benchmarks.rows import require_keys

N_SHOT = 4  # lm-eval's num_fewshot for minerva_math
STOP = ("Problem:",)  # lm-eval's until
STYLES = ("minerva", "boxed")
INSTRUCTION = "Solve the problem. Put the final answer in \\boxed{}."
_BOX_COMMANDS = ("\\boxed", "\\fbox")
_TIMEOUT_S = 5  # math-verify's bound on one parse or comparison

# The four Minerva few-shot examples (Lewkowycz et al., 2022; problems from MATH), as (problem, solution), exactly
# as lm-evaluation-harness ships them in lm_eval/tasks/minerva_math/utils.py (``list_fewshot_samples``, commit
# 4e7e0d47f33bc71070c1d38394bafbb52b117163), quirks kept: they are the benchmark's prompt data, and a changed
# character changes the prompt (the stray "}" after the first problem, "\\\n" where LaTeX would have "\\\\").
# Included rather than read from a user's file so that the default is lm-eval's 4-shot prompt; lm-evaluation-harness
# is under the MIT License, whose notice follows:
#
#   Copyright (c) 2020 EleutherAI
#
#   Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated
#   documentation files (the "Software"), to deal in the Software without restriction, including without limitation
#   the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and
#   to permit persons to whom the Software is furnished to do so, subject to the following conditions:
#
#   The above copyright notice and this permission notice shall be included in all copies or substantial portions
#   of the Software.
#
#   THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED
#   TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL
#   THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF
#   CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
#   DEALINGS IN THE SOFTWARE.
MINERVA_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        'Find the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.}',
        'The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, so '
        '$x\\ge2$, and $5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to zero, so '
        '$5-x>0$, which gives $x<5$. Therefore, the domain of the expression is $\\boxed{[2,5)}$.\nFinal '
        'Answer: The final answer is $[2,5)$. I hope it is correct.',
    ),
    (
        'If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find $\\det (\\mathbf{A} '
        '\\mathbf{B}).$',
        'We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) = (2)(12) '
        '= \\boxed{24}.$\nFinal Answer: The final answer is $24$. I hope it is correct.',
    ),
    (
        'Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how '
        'many times must Terrell lift them in order to lift the same total weight?',
        'If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\\cdot 12\\cdot20=480$ '
        'pounds of weight.  If he lifts two 15-pound weights instead for $n$ times, he will lift a total '
        'of $2\\cdot15\\cdot n=30n$ pounds of weight.  Equating this to 480 pounds, we can solve for $n$:\n'
        '\\begin{align*}\n30n&=480\\\n\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n\\end{align*}\nFinal '
        'Answer: The final answer is $16$. I hope it is correct.',
    ),
    (
        'If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\n6y-9x &=b.\n\\end{align*}has a '
        'solution $(x, y)$ where $x$ and $y$ are both nonzero,\nfind $\\frac{a}{b},$ assuming $b$ is '
        'nonzero.',
        'If we multiply the first equation by $-\\frac{3}{2}$, we obtain\n\n$$6y-9x=-\\frac{3}{2}a.$$Since '
        'we also know that $6y-9x=b$, we have\n\n'
        '$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}{3}}.$$\nFinal Answer: The final '
        'answer is $-\\frac{2}{3}$. I hope it is correct.',
    ),
)

# Lewkowycz et al. (2022), appendix D: the substitutions and removed expressions of the final-answer
# normaliser, in order (as lm-eval's minerva_math applies them).
_SUBSTITUTIONS = (
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), ("\\ ", ""), (" ", ""), ("mbox", "text"),
    (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
)
_REMOVED = (
    "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units", "\\ldots", "sue",
    "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals", "edges",
    "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2",
    "\\text{}^3", "\\text{\n}", "\\text{}", "\\mathrm{th}", "^\\circ", "^{\\circ}", "\\;", ",\\!", "{,}", '"',
    "\\dots",
)
_FINAL_ANSWER = re.compile(r"Final Answer: The final answer is(.*?). I hope it is correct.")
_END = "I hope it is correct."


def normalize_final_answer(answer: str) -> str:
    r"""A final answer normalised as Minerva (and lm-eval's minerva_math) normalise it: the part after the last
    ``=``; the substitutions and removals of appendix D; the content of the first ``$...$``, ``\text{}``,
    ``\textbf{}``, ``\overline{}`` and ``\boxed{}``; ``\fracab`` → ``\frac{a}{b}``, ``\sqrta`` → ``\sqrt{a}``;
    no ``$``; commas dropped from a number such as ``100,000``."""
    answer = answer.split("=")[-1]
    for before, after in _SUBSTITUTIONS:
        answer = answer.replace(before, after)
    for expression in _REMOVED:
        answer = answer.replace(expression, "")
    answer = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", answer)
    for command in ("text", "textbf", "overline"):
        answer = re.sub(r"(\\" + command + r"\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", answer)
    answer = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", answer)
    answer = re.sub(r"(sqrt)([^{])", "sqrt{\\2}", answer)
    answer = answer.replace("$", "")
    if answer.replace(",", "").isdigit():
        answer = answer.replace(",", "")
    return answer


def minerva_answer(completion: str) -> str | None:
    """The un-normalised answer of a Minerva-style completion: what follows the first ``Final Answer: The final
    answer is`` up to the character before `` I hope it is correct.``, stripped, as lm-eval's
    ``get_unnormalized_answer`` finds it (it appends ``I hope it is correct.`` first, so a completion ending in
    ``<answer>. `` has one too); None: lm-eval's ``[invalidanswer]``."""
    match = _FINAL_ANSWER.search(completion + _END)
    return match.group(1).strip() if match else None


def minerva_boxed(solution: str) -> str | None:
    r"""The content of a solution's final box as lm-eval's minerva_math finds it: when ``\boxed `` (with a space)
    occurs, the text after its last occurrence up to the next ``$``; else the last ``\boxed`` (or, without one, the
    last ``\fbox``) through its matching brace, every brace counted; None when there is none or it never closes.
    (lm-eval fails on a ``\fbox{}``; here its content is returned.)"""
    if "\\boxed " in solution:
        return solution.split("\\boxed ")[-1].split("$")[0]
    start = solution.rfind("\\boxed")
    if start < 0:
        start = solution.rfind("\\fbox")
        if start < 0:
            return None
    depth = 0
    for i in range(start, len(solution)):
        if solution[i] == "{":
            depth += 1
        elif solution[i] == "}":
            depth -= 1
            if depth == 0:
                boxed = solution[start : i + 1]
                opening = boxed.find("{")
                return boxed[opening + 1 : -1]
    return None


def last_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{...}`` (or ``\fbox{...}``, or ``\boxed x``) with nested braces matched;
    None when there is none or its braces never close (the ``boxed`` style's extraction)."""
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


def reference_of(row: Mapping[str, Any]) -> str:
    """The ``boxed`` style's reference: ``answer`` when present, else the solution's last box."""
    if row.get("answer") not in (None, ""):
        return str(row["answer"])
    boxed = last_boxed(row.get("solution", ""))
    if boxed is None:
        raise DataError(f"math: row {row.get('unique_id', '?')!r} has no answer and no \\boxed{{}} in its solution")
    return boxed


def minerva_reference(row: Mapping[str, Any]) -> str:
    """The ``minerva`` style's reference, as lm-eval's: the solution's final box, normalised; the row's
    ``answer`` (normalised) when the solution has none."""
    boxed = minerva_boxed(row.get("solution") or "")
    if boxed is None:
        if row.get("answer") in (None, ""):
            raise DataError(f"math: row {row.get('unique_id', '?')!r} has no answer and no \\boxed{{}} in its "
                            "solution")
        boxed = str(row["answer"])
    return normalize_final_answer(boxed)


def problem_prompt(problem: str) -> str:
    """lm-eval's minerva ``doc_to_text``: ``Problem:\\n<problem>\\n\\nSolution:``."""
    return f"Problem:\n{problem}\n\nSolution:"


def fewshot_prefix(shots: Sequence[tuple[str, str]], style: str = "minerva") -> str:
    """The solved examples before a problem: lm-eval's ``<prompt> <solution>\\n\\n`` each (``minerva``), or the
    instruction and ``<prompt>\\n<solution>\\n\\n`` each (``boxed``)."""
    if style == "minerva":
        return "".join(f"{problem_prompt(p)} {s}\n\n" for p, s in shots)
    return INSTRUCTION + "\n\n" + "".join(f"{problem_prompt(p.strip())}\n{s.strip()}\n\n" for p, s in shots)


def load_math(
    data_file: str | Path | None = None,
    *,
    dataset: str | None = None,
    split: str | None = "test",
    n_shot: int = N_SHOT,
    fewshot_file: str | Path | None = None,
    style: str = "minerva",
) -> list[Problem]:
    """MATH problems (ids: ``unique_id`` when present, else ``math/<row>``), reference answers resolved; the few-shot
    examples are the first ``n_shot`` of ``fewshot_file``'s rows, else of :data:`MINERVA_EXAMPLES`."""
    try:  # checked before any generation, not when the first answer is graded
        import math_verify  # noqa: F401
    except ImportError:
        raise DataError("math needs the math-verify package: `pip install math-verify`") from None
    rows, shots = test_and_fewshot_rows("math", data_file, dataset=dataset, split=split, n_shot=n_shot,
                                        fewshot_file=fewshot_file)
    pool: Sequence[tuple[str, str]] = MINERVA_EXAMPLES
    source = f"the {len(MINERVA_EXAMPLES)} Minerva examples (give more with --fewshot-file)"
    if n_shot > 0 and shots is not None:  # the few-shot file's rows
        require_keys(shots[:n_shot], ("problem", "solution"), benchmark="math few-shot")
        pool, source = [(r["problem"], r["solution"]) for r in shots], f"{fewshot_file} has only {len(shots)} rows"
    if n_shot > len(pool):
        raise DataError(f"math: n_shot={n_shot} but {source}")
    return problems_of(rows, fewshot_prefix(pool[:max(n_shot, 0)], style), style=style)


def problems_of(
    rows: Sequence[Mapping[str, Any]], prefix: str | None = None, *, style: str = "minerva"
) -> list[Problem]:
    """One problem per row (ids: ``unique_id`` when present, else ``math/<row>``), reference answers resolved,
    its prompt after ``prefix`` (default: the style's 4-shot examples; lm-eval's for ``minerva``)."""
    if style not in STYLES:
        raise DataError(f"math: unknown style {style!r}; choose from {', '.join(STYLES)}")
    if prefix is None:
        prefix = fewshot_prefix(MINERVA_EXAMPLES[:N_SHOT], style)
    require_keys(rows, ("problem",), benchmark="math")
    problems = []
    for i, r in enumerate(rows):
        reference = minerva_reference(r) if style == "minerva" else reference_of(r)
        info = {"reference": reference, **{k: r[k] for k in ("subject", "level") if k in r}}
        problem_id = str(r.get("unique_id") or f"math/{i}")
        text = r["problem"] if style == "minerva" else r["problem"].strip()
        problems.append(Problem(problem_id, prefix + problem_prompt(text), info=info, data={"style": style}))
    return problems


def extracted_answer(problem: Problem, completion: str) -> str | None:
    """The answer a completion gives in its problem's style (``minerva``: normalised)."""
    if (problem.data or {}).get("style", "minerva") == "boxed":
        return last_boxed(completion)
    answer = minerva_answer(completion)
    return None if answer is None else normalize_final_answer(answer)


def recorded_answer(completion: str) -> str | None:
    """The answer recorded per sample: the Minerva final answer, normalised (None: none)."""
    answer = minerva_answer(completion)
    return None if answer is None else normalize_final_answer(answer)


def is_correct(problem: Problem, completion: str) -> bool:
    return is_equivalent(extracted_answer(problem, completion), problem.info["reference"])


BENCHMARK = Benchmark(
    name="math", load=load_with(load_math, "n_shot", "fewshot_file"), from_rows=problems_of, stop=STOP,
    default_shots=N_SHOT, is_correct=is_correct, answer=recorded_answer,
)
