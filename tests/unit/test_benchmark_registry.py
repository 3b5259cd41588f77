"""The benchmark table (eval/benchmarks/registry.py) and `wmtp.eval.grade` on published rows.

Code is graded in the real sandbox (bubblewrap must be installed, as for tests/integration/test_sandbox.py).
"""

from __future__ import annotations

import pytest

from wmtp.data.records import DataError
from wmtp.eval import grade
from wmtp.eval.benchmarks.registry import BENCHMARKS, MODULES


def test_every_module_is_one_benchmark_of_its_name():
    assert list(BENCHMARKS) == list(MODULES) == sorted(
        ["synthetic", "humaneval", "humaneval_plus", "mbpp", "codecontests", "gsm8k", "math", "hellaswag"])
    assert [name for name, b in BENCHMARKS.items() if not b.generative] == ["hellaswag"]
    sandboxed = [name for name, b in BENCHMARKS.items() if b.sandbox is not None]
    assert sandboxed == ["codecontests", "humaneval", "humaneval_plus", "mbpp", "synthetic"]
    assert BENCHMARKS["mbpp"].default_shots == 3 and BENCHMARKS["gsm8k"].default_shots == 5  # lm-eval's gsm8k


def test_grade_published_rows_in_process_and_in_the_sandbox():
    gsm8k_rows = [{"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"}, {"question": "?", "answer": "#### 7"}]
    # lm-eval's strict-match: the "#### n" answer, compared as a string ("7.0" is not "7")
    assert grade("gsm8k", gsm8k_rows, [["so\n#### 5", "so 5", "#### 6"], ["#### 7", "#### 7.0"]]) == [
        [True, False, False], [True, False]]
    mbpp_row = {"task_id": 600, "text": "Write a function to add one.", "code": "def inc(x):\n    return x + 1",
                "test_setup_code": "", "test_list": ["assert inc(1) == 2"], "challenge_test_list": []}
    assert grade("mbpp", [mbpp_row], [["def inc(x):\n    return x + 1\n", "def inc(x):\n    return x\n"]]) == [
        [True, False]]


def test_grade_refuses_what_it_cannot_grade():
    with pytest.raises(ValueError, match="unknown benchmark"):
        grade("nope", [], [])
    with pytest.raises(ValueError, match="not graded from completions"):
        grade("hellaswag", [], [])
    with pytest.raises(DataError, match="lacks"):
        grade("gsm8k", [{"question": "?"}], [["1"]])
