"""HellaSwag (Zellers et al., 2019): commonsense sentence completion as log-likelihood multiple choice.

Data: the standard jsonl (``hellaswag_val.jsonl`` of ``rowanz/hellaswag``: ``ctx`` — or ``ctx_a`` and
``ctx_b`` —, ``endings`` (4), ``label``, optionally ``activity_label`` and ``ind``), or a hub dataset such as
``Rowan/hellaswag`` (split ``validation``; its labels are strings). wmtp does not ship the file (it is
about 11 MB); pass its path.

Scoring, as lm-eval-harness: the context is ``activity_label: ctx_a Ctx_b`` cleaned of WikiHow's bracketed
markers, each ending is `` ending``; its score is the sum of its tokens' log-probabilities under head 1
given the context encoded as prompts are (`encode_prompt`). ``acc`` takes the best sum, ``acc_norm`` the best
sum per character of the ending without its leading space (lm-eval's ``acc_norm``: lm_eval/api/task.py divides
by ``len(choice)`` of the choice string, while the scored continuation is ``" " + choice``).
No sampling, no code: nothing runs in the sandbox.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress

from wmtp.data.records import DataError
from wmtp.eval.benchmarks.base import Benchmark, Problem, load_with
from wmtp.eval.benchmarks.rows import require_keys, rows_from
from wmtp.eval.prompts import encode_prompt
from wmtp.model.mtp import MTPModel


@dataclass(frozen=True)
class Choice:
    """One item: the context and its candidate continuations (each starting with a space)."""

    context: str
    endings: tuple[str, ...]
    label: int


def preprocess(text: str) -> str:
    """lm-eval-harness's clean-up of HellaSwag text (WikiHow ``[title]`` and other bracketed markers)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def parse_item(row: dict[str, Any]) -> Choice:
    if "ctx_a" in row and "ctx_b" in row:
        ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    else:
        ctx = row["ctx"]
    label = row.get("activity_label")
    context = preprocess(f"{label}: {ctx}" if label else ctx)
    endings = tuple(" " + preprocess(e) for e in row["endings"])
    try:
        answer = int(row["label"])
    except (TypeError, ValueError):
        raise DataError(f"hellaswag: label {row['label']!r} is not an integer") from None
    if not 0 <= answer < len(endings):
        raise DataError(f"hellaswag: label {answer} out of range for {len(endings)} endings")
    return Choice(context, endings, answer)


def load_hellaswag(
    data_file: str | Path | None = None, *, dataset: str | None = None, split: str | None = "validation"
) -> list[Problem]:
    """Items (ids: ``ind`` when present, else ``hellaswag/<row>``); rows without a label are skipped
    (the test split is unlabelled)."""
    rows = rows_from(data_file=data_file, dataset=dataset, split=split or "validation", benchmark="hellaswag")
    require_keys(rows, ("endings", "label"), benchmark="hellaswag")
    problems = []
    for i, row in enumerate(rows):
        if row["label"] in (None, ""):
            continue
        item = parse_item(row)
        problems.append(Problem(str(row.get("ind", f"hellaswag/{i}")), item.context, data=item))
    if not problems:
        raise DataError("hellaswag: no labelled item in the data")
    return problems


@torch.no_grad()
def continuation_logprobs(
    model: MTPModel, tokenizer: Any, pairs: Sequence[tuple[str, str]], *, batch_size: int = 16
) -> list[float]:
    """Sum over the continuation's tokens of log p(token | everything before) under head 1, for each
    (context, continuation). Context and continuation are tokenised separately, the context as a prompt.

    Right-padded batches; only the continuation positions are unembedded (``[B,T,D] → [n_cont,V]``).
    """
    was_training = model.training
    model.eval()
    device = model.unembed.device
    max_len = getattr(model.trunk.config, "max_position_embeddings", None)
    encoded = []
    for context, continuation in pairs:
        ctx, cont = encode_prompt(tokenizer, context), tokenizer.encode(continuation, add_special_tokens=False)
        if not cont or (max_len and len(cont) >= max_len):
            raise ValueError(f"continuation {continuation!r} has {len(cont)} tokens: none, or no room for context")
        ids = ctx + cont
        if max_len and len(ids) > max_len:  # drop the oldest context tokens, never the continuation
            ids = ids[len(ids) - max_len :]
        encoded.append((ids, len(cont)))
    scores = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, (ids, _) in enumerate(chunk):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        z, ctx = model.trunk_forward(input_ids, mask)
        h = model.head_hidden(1, z, ctx)  # [B,T,D]
        for i, (ids, n_cont) in enumerate(chunk):
            # position t predicts token t+1: the continuation's tokens are predicted from len-1-n_cont .. len-2
            positions = torch.arange(len(ids) - 1 - n_cont, len(ids) - 1, device=device)
            logits = (h[i, positions] @ model.unembed.T).float()  # [n_cont,V]
            targets = input_ids[i, positions + 1]
            scores.append(float(torch.log_softmax(logits, -1).gather(-1, targets[:, None]).sum()))
    model.train(was_training)
    return scores


def norm_length(ending: str) -> int:
    """The characters ``acc_norm`` divides by: the ending without the leading space that joins it to the
    context, as lm-eval's ``len(choice)`` (at least 1, so an empty ending cannot divide by zero)."""
    return max(1, len(ending.removeprefix(" ")))


def score_items(
    problems: Sequence[Problem], logprobs: Sequence[Sequence[float]]
) -> list[dict[str, Any]]:
    """Per-item predictions from per-ending log-likelihoods: raw argmax and argmax per character
    (:func:`norm_length`); ties go to the first ending, as numpy's argmax."""
    out = []
    for p, lls in zip(problems, logprobs, strict=True):
        item: Choice = p.data
        per_char = [ll / norm_length(e) for ll, e in zip(lls, item.endings, strict=True)]
        pred = max(range(len(lls)), key=lambda j: lls[j])
        pred_norm = max(range(len(lls)), key=lambda j: per_char[j])
        out.append({
            "problem_id": p.problem_id,
            "label": item.label,
            "pred": pred,
            "pred_norm": pred_norm,
            "correct": pred == item.label,
            "correct_norm": pred_norm == item.label,
            "logprobs": list(lls),
        })
    return out


def evaluate_hellaswag(
    model: MTPModel,
    tokenizer: Any,
    problems: Sequence[Problem],
    *,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """acc and acc_norm over ``problems``; per item the four log-likelihoods and both predictions."""
    if not problems:
        raise DataError("hellaswag: no problems to evaluate")
    logprobs = []
    with Progress(disable=not progress) as bar:
        task = bar.add_task("score", total=len(problems))
        step = max(1, batch_size // 4)
        for start in range(0, len(problems), step):
            chunk = problems[start : start + step]
            pairs = [(p.data.context, e) for p in chunk for e in p.data.endings]
            flat = iter(continuation_logprobs(model, tokenizer, pairs, batch_size=batch_size))
            logprobs.extend([next(flat) for _ in p.data.endings] for p in chunk)
            bar.update(task, advance=len(chunk))
    per_problem = score_items(problems, logprobs)
    n = len(per_problem)
    return {
        "benchmark": "hellaswag",
        "summary": {
            "acc": sum(r["correct"] for r in per_problem) / n,
            "acc_norm": sum(r["correct_norm"] for r in per_problem) / n,
        },
        "n_problems": n,
        "sampling": None,
        "scoring": {"method": "log-likelihood of each ending under head 1",
                    "acc_norm": "per character of the ending without its leading space (lm-eval)"},
        "per_problem": per_problem,
    }


BENCHMARK = Benchmark(name="hellaswag", load=load_with(load_hellaswag), score=evaluate_hellaswag)
