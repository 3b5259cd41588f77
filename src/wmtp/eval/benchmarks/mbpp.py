"""MBPP (Austin et al., 2021): short Python tasks, graded by running their asserts in the sandbox.

Data, either file layout of the upstream repository:
    mbpp.jsonl             text, code, task_id, test_setup_code, test_list, challenge_test_list (974 tasks)
    sanitized-mbpp.json    prompt, code, task_id, test_imports, test_list (427 tasks, one JSON array)
or a hub dataset (``google-research-datasets/mbpp`` or ``...:sanitized``; all its splits are read, so the
few-shot tasks are there). Problems are the tasks with ids 11–510 (the paper's test split: 500 of the full
file, 257 of the sanitized one) unless other ids are asked for.

Prompt (the paper's, as lm-eval-harness uses it): the task, its tests, ``[BEGIN]``; with ``n_shot`` > 0 it is
preceded by tasks 2, 3, 4 written out in full (``... [BEGIN]\\n<code>\\n[DONE]``). Stop: ``[DONE]``.
Grade: the completion, the test setup (or the sanitized file's test imports), then the asserts of
``test_list`` (the challenge tests are not used), run to their end within the timeout (`base.run_to_end`: not
as ``__main__``, so a completion's ``unittest.main()`` block does not run; an early exit fails).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wmtp.data.records import DataError
from wmtp.eval.benchmarks.base import Benchmark, Problem, SandboxSettings, load_with, single_run
from wmtp.eval.benchmarks.rows import rows_from

STOP = ("[DONE]",)
FEWSHOT_IDS = (2, 3, 4)
TEST_IDS = range(11, 511)
N_SHOT = 3


@dataclass(frozen=True)
class Task:
    """One MBPP task in either file layout."""

    task_id: int
    text: str
    code: str
    setup: str
    tests: tuple[str, ...]


def parse_task(row: Mapping[str, Any]) -> Task:
    """A task from a row of mbpp.jsonl (``text``, ``test_setup_code``) or sanitized-mbpp.json (``prompt``,
    ``test_imports``). Line endings of code are normalised (the full file uses CRLF)."""
    try:
        if "text" in row:
            text, setup = row["text"], row.get("test_setup_code") or ""
        else:
            text, setup = row["prompt"], "\n".join(row.get("test_imports") or [])
        return Task(
            task_id=int(row["task_id"]),
            text=text.strip(),
            code=row["code"].replace("\r\n", "\n"),
            setup=setup.replace("\r\n", "\n"),
            tests=tuple(row["test_list"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"mbpp: row is neither mbpp.jsonl nor sanitized-mbpp.json layout ({err!r}): "
                        f"keys {sorted(row)}") from None


def describe(task: Task) -> str:
    """The task and its tests, up to and including ``[BEGIN]``: what the model continues."""
    tests = "\n".join(task.tests)
    return (f"You are an expert Python programmer, and here is your task: {task.text} "
            f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n")


def prompt(task: Task, shots: Sequence[Task] = ()) -> str:
    """The few-shot examples (each ending ``[DONE]``), a blank line between, then the task."""
    examples = [f"{describe(s)}{s.code.strip()}\n[DONE]" for s in shots]
    return "\n\n".join([*examples, describe(task)])


def load_mbpp(
    data_file: str | Path | None = None,
    *,
    dataset: str | None = None,
    split: str | None = None,
    n_shot: int = N_SHOT,
    task_ids: Iterable[int] | None = None,
) -> list[Problem]:
    """MBPP problems in task-id order: ``task_ids`` (default 11–510) that the data holds.

    Raises:
        DataError: a row has neither layout, a few-shot task is missing, or no task is selected.
    """
    if not 0 <= n_shot <= len(FEWSHOT_IDS):
        raise DataError(f"mbpp: n_shot={n_shot} must be between 0 and {len(FEWSHOT_IDS)} (tasks 2, 3, 4)")
    tasks = {t.task_id: t for t in map(parse_task, rows_from(data_file=data_file, dataset=dataset, split=split,
                                                             benchmark="mbpp"))}
    missing = [i for i in FEWSHOT_IDS[:n_shot] if i not in tasks]
    if missing:
        raise DataError(f"mbpp: few-shot task(s) {missing} are not in the data; pass n_shot=0 or a file holding them")
    shots = [tasks[i] for i in FEWSHOT_IDS[:n_shot]]
    wanted = set(TEST_IDS if task_ids is None else task_ids)
    selected = [tasks[i] for i in sorted(tasks) if i in wanted]
    if not selected:
        raise DataError(f"mbpp: none of the {len(tasks)} tasks in the data has a selected id "
                        f"({min(wanted, default=None)}–{max(wanted, default=None)})")
    return [Problem(str(t.task_id), prompt(t, shots), data=t) for t in selected]


def program(task: Task, completion: str) -> str:
    """The completion, the test setup (it may use the solution's classes, e.g. task 367), then the asserts:
    under `base.run_to_end`, exit 0 iff every test ran and passed."""
    return f"{completion}\n\n{task.setup}\n" + "\n".join(task.tests) + "\n"


def problems_of(rows: Sequence[Mapping[str, Any]]) -> list[Problem]:
    """One zero-shot problem per row, in row order (any task id)."""
    return [Problem(str(t.task_id), prompt(t), data=t) for t in map(parse_task, rows)]


BENCHMARK = Benchmark(
    name="mbpp", load=load_with(load_mbpp, "n_shot"), from_rows=problems_of, stop=STOP, default_shots=N_SHOT,
    checks=single_run(lambda p, completion: program(p.data, completion)),
    sandbox=SandboxSettings(timeout_s=10.0, memory_mb=1024),
)
