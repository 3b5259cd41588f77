"""GSM8K (Cobbe et al., 2021): grade-school word problems, graded by exact match of the final number.

Data: ``test.jsonl`` of ``openai/grade-school-math`` (``question``, ``answer``) or the hub's
``openai/gsm8k:main`` (split ``test``). The reference is the number after ``####`` in ``answer``.
Prompt: ``Question: ...\\nAnswer:``, optionally after ``n_shot`` solved examples, the first rows of the train
file written out in full (reasoning, calculator annotations and ``#### n``), as lm-eval-harness does.
Grade: the last number in the completion, commas (thousands separators) removed, equals the reference;
both are compared as decimals, so ``18.00`` matches ``18`` (no code runs: graded in-process).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from wmtp.data.records import DataError
from wmtp.eval.benchmarks.base import Benchmark, Problem, load_with
from wmtp.eval.benchmarks.rows import require_keys, rows_from

STOP = ("Question:", "\n\n\n")
_NUMBER = re.compile(r"-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")


def reference_answer(answer: str) -> str:
    """The text after the last ``####`` of a GSM8K answer, commas removed."""
    if "####" not in answer:
        raise DataError(f"gsm8k: answer has no '####' final answer: {answer[-80:]!r}")
    return answer.rsplit("####", 1)[1].strip().replace(",", "")


def extract_answer(completion: str) -> str | None:
    """The last number of a completion, commas removed (``"$1,234.50."`` → ``"1234.50"``), or None."""
    numbers = _NUMBER.findall(completion)
    return numbers[-1].replace(",", "") if numbers else None


def _as_number(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def answers_match(prediction: str | None, reference: str) -> bool:
    """Exact match of two extracted answers: equal as decimals, else as strings."""
    if prediction is None:
        return False
    a, b = _as_number(prediction), _as_number(reference)
    return a == b if a is not None and b is not None else prediction == reference


def question_prompt(question: str) -> str:
    return f"Question: {question.strip()}\nAnswer:"


def fewshot_prefix(rows: Sequence[dict[str, Any]], n_shot: int) -> str:
    """The first ``n_shot`` rows as solved examples, each followed by a blank line."""
    if n_shot > len(rows):
        raise DataError(f"gsm8k: n_shot={n_shot} but the few-shot data has only {len(rows)} rows")
    require_keys(rows[:n_shot], ("question", "answer"), benchmark="gsm8k few-shot")
    return "".join(f"{question_prompt(r['question'])} {r['answer'].strip()}\n\n" for r in rows[:n_shot])


def load_gsm8k(
    data_file: str | Path | None = None,
    *,
    dataset: str | None = None,
    split: str | None = "test",
    n_shot: int = 0,
    fewshot_file: str | Path | None = None,
) -> list[Problem]:
    """GSM8K problems (ids ``gsm8k/<row>``). Few-shot rows come from ``fewshot_file`` or, with a hub
    dataset, from its ``train`` split."""
    rows = rows_from(data_file=data_file, dataset=dataset, split=split or "test", benchmark="gsm8k")
    prefix = ""
    if n_shot > 0:
        if fewshot_file is None and dataset is None:
            raise DataError("gsm8k: n_shot > 0 needs a few-shot file (--fewshot-file, e.g. the train jsonl)")
        shots = rows_from(data_file=fewshot_file, dataset=None if fewshot_file else dataset,
                          split="train", benchmark="gsm8k few-shot")
        prefix = fewshot_prefix(shots, n_shot)
    return problems_of(rows, prefix)


def problems_of(rows: Sequence[Mapping[str, Any]], prefix: str = "") -> list[Problem]:
    """One problem per row (id ``gsm8k/<row>``), its prompt after ``prefix`` (the few-shot examples)."""
    require_keys(rows, ("question", "answer"), benchmark="gsm8k")
    return [
        Problem(f"gsm8k/{i}", prefix + question_prompt(r["question"]),
                info={"reference": reference_answer(r["answer"])})
        for i, r in enumerate(rows)
    ]


def is_correct(problem: Problem, completion: str) -> bool:
    return answers_match(extract_answer(completion), problem.info["reference"])


BENCHMARK = Benchmark(
    name="gsm8k", load=load_with(load_gsm8k, "n_shot", "fewshot_file"), from_rows=problems_of, stop=STOP,
    is_correct=is_correct, answer=extract_answer,
)
