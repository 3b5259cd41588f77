"""Labelled splits: every completion of every problem is run against its tests in the sandbox, and the outcome
is its label; problems are then split into train / valid / test."""

from __future__ import annotations

import os

from wmtp.config import SyntheticDataConfig
from wmtp.data.records import Record
from wmtp.data.synthetic.problems import Problem, generate_problems
from wmtp.data.synthetic.program import check_program
from wmtp.data.synthetic.spans import Span, diff_spans, merge_spans
from wmtp.eval.sandbox import run_many

# Generous: the programs are tiny, and a correct solution timing out on a loaded machine would change a label.
_LABEL_TIMEOUT_S = 10.0
_LABEL_MEMORY_MB = 512
# A sandboxed run mostly waits (namespace setup and teardown), so several per core keep the cores busy:
# 4 per core labels about twice as fast as 1 per core on 2 cores. Safe here, unlike in evaluation, because
# these programs are our own and run in milliseconds, far from the timeout however busy the cores are.
_LABEL_WORKERS = 4 * (os.cpu_count() or 1)


def label_program(problem: Problem, completion: str) -> str:
    """The program whose exit status labels a completion of the problem (the one evaluation runs too)."""
    return check_program(problem.prompt, completion, problem.tests)


def _label(problems: list[Problem], *, timeout_s: float = _LABEL_TIMEOUT_S) -> list[Record]:
    """Run every completion against its problem's tests; the label is the outcome. Ids: `{problem_id}/c0`, …"""
    jobs = [(p, text) for p in problems for text in p.correct + p.incorrect]
    results = run_many([label_program(p, text) for p, text in jobs], timeout_s=timeout_s,
                       memory_mb=_LABEL_MEMORY_MB, workers=_LABEL_WORKERS)
    passed = iter(r.ok for r in results)
    records, counters = [], {}
    for p in problems:
        texts = p.correct + p.incorrect
        labels = [next(passed) for _ in texts]
        for text, ok, spans in zip(texts, labels, _decisive_spans(p, labels)):
            tag = "c" if ok else "i"
            n = counters.get((p.problem_id, tag), 0)
            counters[(p.problem_id, tag)] = n + 1
            records.append(Record(
                id=f"{p.problem_id}/{tag}{n}", problem_id=p.problem_id, prompt=p.prompt, completion=text,
                is_correct=ok, source="synthetic", difficulty=p.difficulty, tests=p.tests, entry_point=p.entry_point,
                decisive_spans=spans,
            ))
    return records


def _decisive_spans(problem: Problem, labels: list[bool]) -> list[list[Span] | None]:
    """The decisive spans of each completion of the problem (`correct + incorrect`, labelled `labels`).

    A mutant labelled incorrect: where it differs from its source (mutant side). A correct completion: the
    source-side regions its incorrect-labelled mutants changed, merged ([] when none). A mutant labelled correct
    (an equivalent mutant): [], since no change there breaks it, and it has no mutants of its own. A written
    correct completion that fails, and every completion of a problem without `sources`: None (not annotated).
    """
    if problem.sources is None:
        return [None] * len(labels)
    n_correct = len(problem.correct)
    changed: list[list[Span]] = [[] for _ in problem.correct]
    out: list[list[Span] | None] = []
    for mutant, source, ok in zip(problem.incorrect, problem.sources, labels[n_correct:]):
        if ok:
            out.append([])
            continue
        source_side, mutant_side = diff_spans(source, mutant)
        out.append(merge_spans(mutant_side))
        changed[problem.correct.index(source)] += source_side
    return [merge_spans(spans) if ok else None for spans, ok in zip(changed, labels)] + out


def _split_sizes(n_problems: int, cfg: SyntheticDataConfig) -> tuple[int, int, int]:
    """(train, valid, test) problem counts; valid and test get at least one problem each."""
    n_valid = max(1, round(n_problems * cfg.valid_fraction))
    n_test = max(1, round(n_problems * cfg.test_fraction))
    return n_problems - n_valid - n_test, n_valid, n_test


def generate_splits(cfg: SyntheticDataConfig) -> dict[str, list[Record]]:
    """Labelled records split by problem into train / valid / test.

    Contiguous slices of the problem list: since families rotate, every split keeps the family mix.
    """
    n_train, n_valid, _ = _split_sizes(cfg.n_problems, cfg)
    if n_train < 1:
        raise ValueError(f"valid_fraction={cfg.valid_fraction} and test_fraction={cfg.test_fraction} leave no "
                         f"training problem out of n_problems={cfg.n_problems}")
    problems = generate_problems(cfg)
    split_of = {p.problem_id: ("train" if i < n_train else "valid" if i < n_train + n_valid else "test")
                for i, p in enumerate(problems)}
    splits: dict[str, list[Record]] = {"train": [], "valid": [], "test": []}
    for record in _label(problems):
        splits[split_of[record.problem_id]].append(record)
    return splits
