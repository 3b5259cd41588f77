"""GSM8K (Cobbe et al., 2021): grade-school word problems, graded by exact match of the final number.

Matches lm-eval ``gsm8k`` (lm-evaluation-harness ``lm_eval/tasks/gsm8k/gsm8k.yaml``, version 3.0): 5-shot by
default, few-shot rows sampled from the train split as lm-eval samples them, lm-eval's prompt, stop strings and
both of its answer filters; the reported pass@1 at temperature 0 is lm-eval's ``exact_match,strict-match``.

Data: ``test.jsonl`` of ``openai/grade-school-math`` (``question``, ``answer``) or the hub's
``openai/gsm8k:main`` (split ``test``); few-shot rows: ``--fewshot-file`` (the train jsonl) or, with a hub dataset,
its ``train`` split. ``--n-shot 0`` gives the zero-shot prompt.
Prompt: each of the ``n_shot`` examples as ``Question: <question>\\nAnswer: <answer>`` (the train row's answer in
full: reasoning, calculator annotations and ``#### n``) followed by a blank line, then
``Question: <question>\\nAnswer:``; text as in the rows (not stripped), as lm-eval renders ``doc_to_text``.
Few-shot sampling (lm-eval's default sampler, ``fewshot_split: train``, fewshot seed 1234): one
``random.Random(1234)``; for the test rows in order, row i's examples are the i-th draw of
``rnd.sample(train_rows, n_shot)``, in the drawn order. ``--limit`` keeps the first rows, so their prompts are
the ones lm-eval builds with ``--limit``. (Before, wmtp took the first ``n_shot`` train rows for every problem.)
Stop: lm-eval's ``until``: ``Question:``, ``</s>``, ``<|im_end|>`` (and the tokenizer's eos, as lm-eval adds it).
Grade (``answer_filter`` of the loader; the answers are compared as lm-eval's ``exact_match`` compares them: commas,
``$``, everything up to ``#### `` and a final ``.`` removed from both, case ignored, then string equality, so
``18.00`` is not ``18``):

- ``strict-match`` (default): the first ``#### <number>`` of the completion;
- ``flexible-extract``: the last number-like run of the completion (``$18.`` gives ``18``);
- ``last-number``: wmtp's earlier grader, the last number compared as a decimal (``18.00`` = ``18``); not lm-eval.

The answer recorded per sample (``answers``) is the strict-match one; :func:`flexible_extract` gives the other
(the harness records one answer per sample). No code runs: graded in-process.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from wmtp.data.records import DataError
from wmtp.eval.benchmarks.base import Benchmark, Problem, load_with
from wmtp.eval.benchmarks.fewshot import test_and_fewshot_rows
from wmtp.eval.benchmarks.rows import require_keys

N_SHOT = 5  # lm-eval's num_fewshot
FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed
STOP = ("Question:", "</s>", "<|im_end|>")  # lm-eval's generation_kwargs.until
FILTERS = ("strict-match", "flexible-extract", "last-number")
FALLBACK = "[invalid]"  # what lm-eval's regex filter gives when nothing matches

# lm-eval's filter regexes and the regexes its exact_match ignores (facts of the task definition).
_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_IGNORED = (",", r"\$", r"(?s).*#### ", r"\.$")
_NUMBER = re.compile(r"-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")


def reference_answer(answer: str) -> str:
    """The text after the last ``####`` of a GSM8K answer, commas removed."""
    if "####" not in answer:
        raise DataError(f"gsm8k: answer has no '####' final answer: {answer[-80:]!r}")
    return answer.rsplit("####", 1)[1].strip().replace(",", "")


def strict_match(completion: str) -> str | None:
    """lm-eval's strict-match filter: the number of the first ``#### <number>`` (None: lm-eval's ``[invalid]``)."""
    found = _STRICT.findall(completion)
    return found[0].strip() if found else None


def flexible_extract(completion: str) -> str | None:
    """lm-eval's flexible-extract filter: the last run of 2+ of ``-$0-9.,`` or a lone (signed) digit run."""
    found = _FLEXIBLE.findall(completion)
    if not found:
        return None
    groups = [g for g in found[-1] if g]
    return groups[0].strip() if groups else None


def exact_match(prediction: str | None, target: str) -> bool:
    """lm-eval's exact_match for gsm8k: both sides with its ignored regexes removed, lower-cased, equal.

    ``target`` is the row's ``answer`` (the full solution) or its final number."""
    if prediction is None:
        prediction = FALLBACK

    def clean(text: str) -> str:
        for pattern in _IGNORED:
            text = re.sub(pattern, "", text)
        return text.lower()

    return clean(prediction) == clean(target)


def extract_answer(completion: str) -> str | None:
    """The last number of a completion, commas removed (``"$1,234.50."`` → ``"1234.50"``), or None (the
    ``last-number`` filter)."""
    numbers = _NUMBER.findall(completion)
    return numbers[-1].replace(",", "") if numbers else None


def _as_number(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def answers_match(prediction: str | None, reference: str) -> bool:
    """The ``last-number`` comparison of two extracted answers: equal as decimals, else as strings."""
    if prediction is None:
        return False
    a, b = _as_number(prediction), _as_number(reference)
    return a == b if a is not None and b is not None else prediction == reference


def question_prompt(question: str) -> str:
    """lm-eval's ``doc_to_text``: ``Question: <question>\\nAnswer:``."""
    return f"Question: {question}\nAnswer:"


def example(row: Mapping[str, Any]) -> str:
    """One solved few-shot example: the question prompt, a space (lm-eval's target delimiter), the answer,
    a blank line (its few-shot delimiter)."""
    return f"{question_prompt(row['question'])} {row['answer']}\n\n"


def fewshot_indices(n_rows: int, pool_size: int, n_shot: int, *, seed: int = FEWSHOT_SEED) -> list[list[int]]:
    """For each of ``n_rows`` test rows in order, the indices of its few-shot rows in the pool: successive
    ``sample(range(pool_size), n_shot)`` draws of one ``random.Random(seed)`` (lm-eval's default sampler with
    a few-shot split other than the test split; ``Random.sample`` picks by position, so sampling indices
    picks the same rows as sampling the rows)."""
    if n_shot > pool_size:
        raise DataError(f"gsm8k: n_shot={n_shot} but the few-shot data has only {pool_size} rows")
    if n_shot <= 0:
        return [[] for _ in range(n_rows)]
    rnd = random.Random(seed)
    return [rnd.sample(range(pool_size), n_shot) for _ in range(n_rows)]


def load_gsm8k(
    data_file: str | Path | None = None,
    *,
    dataset: str | None = None,
    split: str | None = "test",
    n_shot: int = N_SHOT,
    fewshot_file: str | Path | None = None,
    seed: int = FEWSHOT_SEED,
    answer_filter: str = "strict-match",
) -> list[Problem]:
    """GSM8K problems (ids ``gsm8k/<row>``), each with its own ``n_shot`` examples (see the module docstring).
    Few-shot rows come from ``fewshot_file`` or, with a hub dataset, from its ``train`` split."""
    rows, shots = test_and_fewshot_rows("gsm8k", data_file, dataset=dataset, split=split, n_shot=n_shot,
                                        fewshot_file=fewshot_file, hub_fewshot_split="train")
    if shots is None:
        raise DataError(f"gsm8k: n_shot={n_shot} (lm-eval's default is {N_SHOT}) needs a few-shot file "
                        "(--fewshot-file, the train jsonl), or --n-shot 0 for the zero-shot prompt")
    draws = fewshot_indices(len(rows), len(shots), n_shot, seed=seed)
    used = sorted({i for draw in draws for i in draw})
    require_keys([shots[i] for i in used], ("question", "answer"), benchmark="gsm8k few-shot")
    return problems_of(rows, ["".join(example(shots[i]) for i in draw) for draw in draws],
                       answer_filter=answer_filter)


def problems_of(
    rows: Sequence[Mapping[str, Any]],
    prefixes: Sequence[str] | str = "",
    *,
    answer_filter: str = "strict-match",
) -> list[Problem]:
    """One problem per row (id ``gsm8k/<row>``), its prompt after its prefix (its few-shot examples; one
    string: the same for every row), graded by ``answer_filter``."""
    if answer_filter not in FILTERS:
        raise DataError(f"gsm8k: unknown answer filter {answer_filter!r}; choose from {', '.join(FILTERS)}")
    require_keys(rows, ("question", "answer"), benchmark="gsm8k")
    if isinstance(prefixes, str):
        prefixes = [prefixes] * len(rows)
    return [
        Problem(f"gsm8k/{i}", prefix + question_prompt(r["question"]),
                info={"reference": reference_answer(r["answer"])}, data={"filter": answer_filter})
        for i, (r, prefix) in enumerate(zip(rows, prefixes, strict=True))
    ]


def is_correct(problem: Problem, completion: str) -> bool:
    chosen = (problem.data or {}).get("filter", "strict-match")
    reference = problem.info["reference"]
    if chosen == "last-number":
        return answers_match(extract_answer(completion), reference)
    extract = strict_match if chosen == "strict-match" else flexible_extract
    return exact_match(extract(completion), reference)


BENCHMARK = Benchmark(
    name="gsm8k", load=load_with(load_gsm8k, "n_shot", "fewshot_file"), from_rows=problems_of, stop=STOP,
    default_shots=N_SHOT, is_correct=is_correct, answer=strict_match,
)
