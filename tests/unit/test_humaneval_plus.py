"""HumanEval+ graded as EvalPlus's evaluator does (eval/benchmarks/humaneval_plus.py), through `wmtp.eval.grade`
(base + plus) and `humaneval_plus.grade_base` (base).

Hand-made rows in this file always run; the real data (../shared/data/HumanEvalPlus.jsonl.gz, outside the
repository) is skipped where it is absent, as on a fresh clone. Code is graded in the real sandbox (bubblewrap
must be installed, as for tests/integration/test_sandbox.py).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from wmtp.data.records import DataError
from wmtp.eval import grade
from wmtp.eval.benchmarks import humaneval_plus
from wmtp.eval.benchmarks.base import DataSource, Problem
from wmtp.eval.benchmarks.registry import BENCHMARKS

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "HumanEvalPlus.jsonl.gz"
needs_data = pytest.mark.skipif(not DATA.is_file(), reason=f"HumanEval+ data not found at {DATA} (lives outside "
                                "the repository: evalplus/humanevalplus_release v0.1.10)")


def row(task_id: str, prompt: str, canonical: str, base: list, plus: list, *, atol: float = 0,
        entry_point: str = "f") -> dict:
    """A HumanEval+ row as the release holds it."""
    return {"task_id": task_id, "prompt": prompt, "entry_point": entry_point, "canonical_solution": canonical,
            "test": "", "contract": "", "base_input": base, "plus_input": plus, "atol": atol}


ADD = row("t/add", "def f(x, y):\n", "    return x + y\n", [[1, 2], [0, 0]], [[10**30, 1], [-5, 5], [150, 1]])
THIRD = row("t/third", "def f(x):\n", "    return x / 3\n", [[1.0], [2.0]], [[10.0], [-7.0]])
TOLERANT = row("t/tolerant", "def f(x):\n", "    return x / 3\n", [[1.0]], [[4.0]], atol=1e-4)
# EvalPlus's tolerance sticks: after the float output of input 0, the integer output of input 1 is compared
# with np.allclose too (rtol 1e-7 of 10**8 is 10).
STICKY = row("t/sticky", "def f(x):\n", "    return x / 2 if x == 1 else x\n", [[1], [10**8]], [])
FIND_ZERO = row("t/find_zero", "import math\n\n\ndef poly(xs, x):\n    return sum(c * math.pow(x, i) for i, c in "
                "enumerate(xs))\n\n\ndef find_zero(xs):\n", "    return -xs[0] / xs[1]\n",
                [[[-0.5, 0.5]]], [[[-1.0, 0.5]]], atol=1e-4, entry_point="find_zero")


def both(rows: list[dict], completions: list[list[str]]) -> tuple[list[list[bool]], list[list[bool]]]:
    """(base, base + plus) verdicts."""
    return humaneval_plus.grade_base(rows, completions), grade("humaneval_plus", rows, completions)


def test_registered_with_evalplus_limits():
    bench = BENCHMARKS["humaneval_plus"]
    assert bench.sandbox.timeout_s == 61.0 and bench.stop == BENCHMARKS["humaneval"].stop


def test_exact_outputs_base_and_plus():
    completions = ["    return x + y\n", "    return None\n", "    return x + y + 1\n",
                   "    return x + y if x < 100 else 0\n", "    return float(x + y)\n"]
    base, plus = both([ADD], [completions])
    # x + y as a float equals the int on base; on plus 10**30 + 1 is not exactly representable.
    assert base == [[True, False, False, True, True]]
    assert plus == [[True, False, False, False, False]]


def test_floats_within_evalplus_tolerance():
    completions = ["    return x / 3\n", "    return x / 3 + 1e-9\n", "    return x / 3 + 1e-3\n",
                   "    return round(x / 3)\n", "    return [x / 3]\n"]
    assert grade("humaneval_plus", [THIRD], [completions]) == [[True, True, False, False, False]]
    assert grade("humaneval_plus", [TOLERANT], [["    return x / 3 + 5e-5\n", "    return x / 3 + 1e-3\n"]]) == [
        [True, False]]


def test_tolerance_sticks_after_the_first_float_output():
    assert grade("humaneval_plus", [STICKY], [["    return x / 2 if x == 1 else x + 1\n",
                                               "    return x / 2 if x == 1 else x + 11\n"]]) == [[True, False]]


def test_find_zero_accepts_any_root_within_atol():
    # 1 + 1.5e-4 is 1.5e-4 from the canonical root (beyond atol) but poly is 7.5e-5 there.
    completions = ["    return -xs[0] / xs[1] + 1.5e-4\n", "    return -xs[0] / xs[1] + 0.1\n", "    return None\n"]
    assert grade("humaneval_plus", [FIND_ZERO], [completions]) == [[True, False, False]]


@pytest.mark.parametrize("cheat", ["    import sys\n    sys.exit(0)\n", "    raise SystemExit\n",
                                   "    import os\n    os._exit(0)\n", "    return None\nexit(0)\n",
                                   "    return input()\n"])
def test_early_exits_and_input_fail(cheat):
    assert grade("humaneval_plus", [ADD], [[cheat]]) == [[False]]


def test_printing_and_main_blocks_do_not_matter():
    completion = "    print('noise')\n    return x + y\n\nif __name__ == '__main__':\n    raise SystemExit(1)\n"
    assert grade("humaneval_plus", [ADD], [[completion]]) == [[True]]


def test_an_input_past_its_time_limit_fails():
    assert grade("humaneval_plus", [ADD], [["    while True:\n        pass\n"]]) == [[False]]


def test_no_bundled_data_says_where_it_is():
    with pytest.raises(DataError, match="HumanEvalPlus.jsonl.gz"):
        BENCHMARKS["humaneval_plus"].load(DataSource())


def test_a_failing_canonical_solution_is_a_data_error():
    broken = row("t/broken", "def f(x):\n", "    return 1 / x\n", [[0]], [])
    with pytest.raises(DataError, match="t/broken.*canonical solution failed on its base inputs"):
        grade("humaneval_plus", [broken], [["    return 0\n"]])


@needs_data
def test_real_data_loads_as_published():
    problems = BENCHMARKS["humaneval_plus"].load(DataSource(data_file=str(DATA)))
    assert len(problems) == 164 and problems[0].problem_id == "HumanEval/0"
    assert problems[0].prompt.startswith("from typing import List")


@needs_data
@pytest.mark.slow
def test_canonical_solutions_pass_and_wrong_ones_fail():
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    canonical = [[r["canonical_solution"], "    return None\n"] for r in rows]
    base, plus = both(rows, canonical)
    assert [b[0] for b in base] == [p[0] for p in plus] == [True] * 164
    assert not any(b[1] for b in base) and not any(p[1] for p in plus)
    # Off by one: a result or a range bound shifted by one.
    wrong = {13: "    while b:\n        a, b = b, a % b\n    return a + 1\n",
             23: "    return len(string) - 1\n",
             100: "    return [n + 2 * i for i in range(n - 1)]\n"}
    assert grade("humaneval_plus", [rows[i] for i in wrong], [[c] for c in wrong.values()]) == [[False]] * 3


def test_the_result_reports_base_pass_at_k_beside_base_plus():
    from wmtp.eval.benchmarks.harness import report
    from wmtp.eval.generate import SamplingConfig

    assert set(humaneval_plus.BENCHMARK.extra_verdicts) == {"base"}
    problems = [Problem("a", "p"), Problem("b", "q")]
    result = report("humaneval_plus", problems, [["x", "y"], ["z", "w"]], [[False, False], [True, False]],
                    sampling=SamplingConfig(n=2, temperature=0.8), ks=(1,),
                    extra={"base": [[True, False], [True, True]]})
    assert result["summary"]["pass@1"] == 0.25 and result["summary_base"]["pass@1"] == 0.75
    assert result["per_problem"][0]["passed_base"] == [True, False]
