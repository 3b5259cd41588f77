"""Benchmark graders on hand-made right and wrong answers, loaders on hand-made rows, the shared harness.

Code is graded in the real sandbox (bubblewrap must be installed, as for tests/integration/test_sandbox.py).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from wmtp.config import ModelConfig
from wmtp.data.records import DataError
from wmtp.data.tokenizer import train_tokenizer
from wmtp.eval.benchmarks import codecontests, gsm8k, hellaswag, humaneval, mbpp
from wmtp.eval.benchmarks import math as math_bench
from wmtp.eval.benchmarks.base import Check, Problem, SandboxSettings
from wmtp.eval.benchmarks.harness import check_passes, grade_problems, normalize_output, report, run_checks
from wmtp.eval.benchmarks.rows import read_rows, require_keys, rows_from
from wmtp.eval.generate import SamplingConfig
from wmtp.eval.sandbox import ExecResult
from wmtp.model.mtp import MTPModel


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- GSM8K -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("She sells 9 eggs at $2 each, so she makes 9 * 2 = $18.", "18"),
        ("The total is $1,234.50.", "1234.50"),
        ("It drops 3 then 8 degrees: -5", "-5"),
        ("48/2 = <<48/2=24>>24 clips in May.\n#### 72", "72"),
        ("half of it, .5", ".5"),
        ("There are 3 apples, then 7 more, so 10 in all. Question: next", "10"),
        ("no number here", None),
    ],
)
def test_gsm8k_extracts_the_last_number_without_commas(completion, expected):
    assert gsm8k.extract_answer(completion) == expected


def test_gsm8k_reference_and_exact_match():
    assert gsm8k.reference_answer("3 + 4 = <<3+4=7>>7 boxes\n#### 1,000") == "1000"
    with pytest.raises(DataError, match="####"):
        gsm8k.reference_answer("no final answer")
    assert gsm8k.answers_match("18.00", "18") and gsm8k.answers_match(".5", "0.5")
    assert not gsm8k.answers_match("17", "18") and not gsm8k.answers_match(None, "18")
    # wmtp's earlier grader, kept as the "last-number" filter (the default is now lm-eval's strict-match)
    problem = Problem("gsm8k/0", "Question: ...\nAnswer:", info={"reference": "18"}, data={"filter": "last-number"})
    completions = [["so she makes 9 * 2 = $18 a day.", "so she makes 9 * 3 = $27."]]
    graded = grade_problems(gsm8k.BENCHMARK, [problem], completions)
    assert graded == [[True, False]]


@pytest.mark.parametrize(
    ("completion", "strict", "flexible"),
    [
        # lm-eval gsm8k: strict-match is the first "#### <number>", flexible-extract the last number-like run
        ("9 * 2 = <<9*2=18>>18 dollars.\n#### 18", "18", "18"),
        ("#### 1,000\n\nQuestion: 5 more #### 7", "1,000", "7"),
        ("She makes 9 * 2 = $18.", None, "$18."),
        ("It drops to -5 degrees", None, "-5"),
        ("#### -3.5 and then 12", "-3.5", "12"),
        ("####12 has no space", None, "12"),
        ("the answer is 7", None, "7"),
        ("no number here", None, None),
    ],
)
def test_gsm8k_lm_eval_filters(completion, strict, flexible):
    assert gsm8k.strict_match(completion) == strict
    assert gsm8k.flexible_extract(completion) == flexible


@pytest.mark.parametrize(
    ("prediction", "target", "equal"),
    [
        # lm-eval's exact_match: ",", "$", everything up to "#### " and a final "." removed, case ignored
        ("1,000", "So 1000 boxes.\n#### 1,000", True),
        ("$18.", "#### 18", True),
        ("18.00", "18", False),  # strings, not numbers: lm-eval counts this wrong
        ("18", "18", True),
        (None, "18", False),
    ],
)
def test_gsm8k_lm_eval_exact_match(prediction, target, equal):
    assert gsm8k.exact_match(prediction, target) is equal


def test_gsm8k_grades_with_the_chosen_filter():
    rows = [{"question": "How much?", "answer": "9 * 2 = <<9*2=18>>18\n#### 18"}]
    completions = ["9 * 2 = 18\n#### 18", "She makes 9 * 2 = $18.", "#### 18.00", "#### 17 or rather 18"]
    verdicts = {f: [gsm8k.is_correct(gsm8k.problems_of(rows, answer_filter=f)[0], c) for c in completions]
                for f in gsm8k.FILTERS}
    assert verdicts == {"strict-match": [True, False, False, False], "flexible-extract": [True, True, False, True],
                        "last-number": [True, True, True, True]}
    assert gsm8k.BENCHMARK.is_correct(gsm8k.BENCHMARK.from_rows(rows)[0], "She makes 9 * 2 = $18.") is False
    assert gsm8k.BENCHMARK.answer("x\n#### 18\n") == "18" and gsm8k.BENCHMARK.default_shots == 5
    assert gsm8k.BENCHMARK.stop == ("Question:", "</s>", "<|im_end|>")
    with pytest.raises(DataError, match="answer filter"):
        gsm8k.problems_of(rows, answer_filter="first-number")


def lm_eval_gsm8k_prompts(test_rows, train_rows, n_shot, seed=1234):
    """The prompts lm-eval's gsm8k builds, from its rules: one Random(seed) shared by the test rows in order;
    each draws rnd.sample(train_rows, n_shot) (train is the few-shot split, so no row is excluded); examples are
    doc_to_text + target delimiter " " + the answer + few-shot delimiter "\n\n"; then doc_to_text."""
    import random

    rnd = random.Random(seed)
    prompts = []
    for row in test_rows:
        shots = rnd.sample(train_rows, n_shot)
        context = "".join("Question: " + s["question"] + "\nAnswer:" + " " + s["answer"] + "\n\n" for s in shots)
        prompts.append(context + "Question: " + row["question"] + "\nAnswer:")
    return prompts


def test_gsm8k_fewshot_prompts_are_lm_evals(tmp_path):
    train_rows = [{"question": f"What is {i}+{i}?", "answer": f"{i}+{i}=<<{i}+{i}={2 * i}>>{2 * i}\n#### {2 * i}"}
                  for i in range(40)]
    test_rows = [{"question": "What is 2+2? ", "answer": "2+2=4\n#### 4"},
                 {"question": "Half of 8?", "answer": "#### 4"}, {"question": "Triple 3?", "answer": "#### 9"}]
    test, train = write_jsonl(tmp_path / "test.jsonl", test_rows), write_jsonl(tmp_path / "train.jsonl", train_rows)
    problems = gsm8k.load_gsm8k(test, fewshot_file=train)  # lm-eval's default: 5 shots
    assert [p.prompt for p in problems] == lm_eval_gsm8k_prompts(test_rows, train_rows, 5)
    assert problems[0].prompt.count("Question:") == 6 and problems[0].prompt != problems[1].prompt
    assert problems[0].prompt.endswith("Question: What is 2+2? \nAnswer:")  # the row's text, not stripped
    # the rows are drawn, not the first five; another seed draws others
    assert not problems[0].prompt.startswith("Question: What is 0+0?\nAnswer:")
    other = gsm8k.load_gsm8k(test, fewshot_file=train, n_shot=3, seed=7)
    assert [p.prompt for p in other] == lm_eval_gsm8k_prompts(test_rows, train_rows, 3, seed=7)


def test_gsm8k_loader_and_fewshot_prompt(tmp_path):
    test = write_jsonl(tmp_path / "test.jsonl", [{"question": "What is 2+2? ", "answer": "2+2=4\n#### 4"}])
    train = write_jsonl(tmp_path / "train.jsonl", [
        {"question": "What is 1+1?", "answer": "1+1=<<1+1=2>>2\n#### 2"},
        {"question": "What is 3+3?", "answer": "#### 6"},
    ])
    (zero,) = gsm8k.load_gsm8k(test, n_shot=0)
    assert zero.prompt == "Question: What is 2+2? \nAnswer:" and zero.info == {"reference": "4"}
    (both,) = gsm8k.load_gsm8k(test, n_shot=2, fewshot_file=train)
    first, second = ("What is 1+1?", "1+1=<<1+1=2>>2\n#### 2"), ("What is 3+3?", "#### 6")
    drawn = [first, second] if both.prompt.startswith("Question: What is 1+1?") else [second, first]
    assert both.prompt == "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in drawn) + zero.prompt
    with pytest.raises(DataError, match="few-shot file"):
        gsm8k.load_gsm8k(test)  # 5 shots by default, and no few-shot rows
    with pytest.raises(DataError, match="only 2 rows"):
        gsm8k.load_gsm8k(test, n_shot=3, fewshot_file=train)


# --- MATH --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"first \boxed{\frac{1}{2}}, finally \boxed{\frac{\sqrt{3}}{2}}.", r"\frac{\sqrt{3}}{2}"),
        (r"$\boxed{\left\{ x^{2}, \{y\} \right\}}$", r"\left\{ x^{2}, \{y\} \right\}"),
        (r"\boxed{{a}{b}} done", "{a}{b}"),
        (r"so the answer is \boxed 5.", "5."),
        (r"\fbox{3}", "3"),
        (r"\boxed{\frac{1}{2}", None),
        ("the answer is 5", None),
    ],
)
def test_last_boxed_matches_nested_braces(text, expected):
    assert math_bench.last_boxed(text) == expected


@pytest.mark.parametrize(
    ("prediction", "reference", "equal"),
    [
        ("0.5", r"\frac{1}{2}", True),
        (r"\dfrac12", r"\frac{1}{2}", True),
        (r"(3, \pi/2)", r"\left( 3, \frac{\pi}{2} \right)", True),
        ("(x+1)^2", "x^2+2x+1", True),
        (r"\{2, 1\}", r"\{1,2\}", True),
        (r"\text{(C)}", "C", True),
        ("3", "4", False),
        (r"\frac{1}{3}", "0.5", False),
        (None, "4", False),
        # math-verify parses neither: the normalised strings decide
        (r"a\#b", r"a \# b", True),
        (r"a \# c", r"a \# b", False),
    ],
)
def test_math_equivalence(prediction, reference, equal):
    assert math_bench.is_equivalent(prediction, reference) is equal


def test_math_loader_resolves_references_and_grades(tmp_path):
    data = write_jsonl(tmp_path / "math.jsonl", [
        {"problem": "Half of 1?", "solution": r"It is $\boxed{\frac{1}{2}}$.", "unique_id": "test/a/1.json",
         "level": 1},
        {"problem": "Two plus two?", "solution": r"So $\boxed{4}$.", "answer": "4", "subject": "Algebra"},
    ])
    first, second = math_bench.load_math(data, style="boxed")  # wmtp's earlier prompt and grader
    assert (first.problem_id, first.info) == ("test/a/1.json", {"reference": r"\frac{1}{2}", "level": 1})
    assert (second.problem_id, second.info) == ("math/1", {"reference": "4", "subject": "Algebra"})
    assert second.prompt.endswith("Problem:\nTwo plus two?\n\nSolution:")
    completions = [[r"Halving gives $\boxed{0.5}$.", r"$\boxed{2}$", "one half"], [r"\boxed{4}", r"\boxed{5}", "4"]]
    graded = grade_problems(math_bench.BENCHMARK, [first, second], completions)
    assert graded == [[True, False, False], [True, False, False]]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"problem": "?", "solution": "no box"}])
    with pytest.raises(DataError, match="boxed"):
        math_bench.load_math(bad)


MINERVA_SHA256 = "9ffe986a2a11cb76627a7706706fd2dd3f85da51d2ddf0b9184616b4203b8412"  # json.dumps of the
# [problem, solution] pairs of lm-eval's list_fewshot_samples() (minerva_math/utils.py, commit 4e7e0d47)


def test_minerva_examples_are_lm_evals():
    import hashlib

    pairs = [list(pair) for pair in math_bench.MINERVA_EXAMPLES]
    assert hashlib.sha256(json.dumps(pairs).encode()).hexdigest() == MINERVA_SHA256
    assert [math_bench.minerva_boxed(s) for _, s in pairs] == ["[2,5)", "24", "16", r"-\frac{2}{3}"]


def test_math_minerva_prompt_is_lm_evals(tmp_path):
    data = write_jsonl(tmp_path / "math.jsonl", [{"problem": "What is $1+1$? ", "solution": r"$\boxed{2}$"}])
    (problem,) = math_bench.load_math(data)  # lm-eval's default: 4 shots
    # lm-eval's minerva_math: "Problem:\n" + problem + "\n\n" + "Solution:", the target delimiter " ", the
    # example's solution, the few-shot delimiter "\n\n"; the four fixed examples in order (first_n)
    expected = "".join("Problem:" + "\n" + p + "\n\n" + "Solution:" + " " + s + "\n\n"
                       for p, s in math_bench.MINERVA_EXAMPLES)
    assert problem.prompt == expected + "Problem:\nWhat is $1+1$? \n\nSolution:"
    assert problem.prompt.startswith("Problem:\nFind the domain of the expression  $\\frac{\\sqrt{x-2}}")
    (zero,) = math_bench.load_math(data, n_shot=0)
    assert zero.prompt == "Problem:\nWhat is $1+1$? \n\nSolution:"
    (two,) = math_bench.load_math(data, n_shot=2)
    assert two.prompt.count("Problem:") == 3 and "Terrell" not in two.prompt
    shots = write_jsonl(tmp_path / "shots.jsonl",
                        [{"problem": "P1", "solution": "S1"}, {"problem": "P2", "solution": "S2"}])
    (own,) = math_bench.load_math(data, n_shot=2, fewshot_file=shots)
    assert own.prompt == "Problem:\nP1\n\nSolution: S1\n\nProblem:\nP2\n\nSolution: S2\n\n" + zero.prompt
    with pytest.raises(DataError, match="4 Minerva examples"):
        math_bench.load_math(data, n_shot=5)
    with pytest.raises(DataError, match="only 2 rows"):
        math_bench.load_math(data, n_shot=3, fewshot_file=shots)
    assert math_bench.BENCHMARK.default_shots == 4 and math_bench.BENCHMARK.stop == ("Problem:",)


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("so $x=2$.\nFinal Answer: The final answer is $2$. I hope it is correct.", "$2$"),
        ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.\n\nFinal Answer: The final "
         "answer is $3$. I hope it is correct.", "$\\frac{1}{2}$"),  # the first sentence
        # lm-eval appends "I hope it is correct." before searching: only a completion ending in ". " gains
        ("Final Answer: The final answer is $[2,5)$. ", "$[2,5)$"),
        ("Final Answer: The final answer is 7. ", "7"),
        ("Final Answer: The final answer is $[2,5)$", None),
        ("Final Answer: The final answer is 7.", None),
        ("Final Answer: The final answer is 12. I hope", None),
        (r"The answer is $\boxed{5}$.", None),  # a box is not the Minerva answer
        ("final answer: the final answer is 5. I hope it is correct.", None),  # case matters
    ],
)
def test_minerva_final_answer_sentence(completion, expected):
    assert math_bench.minerva_answer(completion) == expected


@pytest.mark.parametrize(
    ("solution", "expected"),
    [
        (r"so $\boxed{\frac{\sqrt{3}}{2}}$.", r"\frac{\sqrt{3}}{2}"),
        (r"first \boxed{1}, then \boxed{\{1,2\}}", r"\{1,2\}"),  # the last box; every brace counts
        (r"so the answer is $\boxed 5$.", "5"),  # "\boxed " with a space: up to the next "$"
        (r"\boxed{2} and \boxed 3", "3"),
        (r"\fbox{3}", "3"),
        (r"\boxed{\frac{1}{2}", None),
        ("no box", None),
    ],
)
def test_minerva_boxed_reference(solution, expected):
    assert math_bench.minerva_boxed(solution) == expected


@pytest.mark.parametrize(
    ("answer", "normalized"),
    [
        ("$\\frac{1}{2}$", r"\frac{1}{2}"),
        ("x = 5", "5"),
        (r"5 \text{ cm}", "5"),
        ("100,000", "100000"),
        (r"\dfrac12", r"\dfrac{1}{2}"),
        (r"\sqrt2", r"\sqrt{2}"),
        (r"\text{(C)}", "(C)"),
        (r"30^\circ", "30"),
        # the normaliser's own quirks, kept as lm-eval has them: "ft" is removed inside "\left" and "\infty"
        (r"(2,\infty)", r"(2,\iny)"),
        (r"\left( 3, \frac{\pi}{2} \right)", r"\le(3,\frac{\pi}{2}\right)"),
    ],
)
def test_minerva_normalize_final_answer(answer, normalized):
    assert math_bench.normalize_final_answer(answer) == normalized


def test_math_minerva_grading():
    rows = [{"problem": "Half of 1?", "solution": r"It is $\boxed{\frac{1}{2}}$."},
            {"problem": "Interval?", "solution": r"So $x \in \boxed{[2,5)}$.", "answer": "[2,5)"}]
    first, second = math_bench.problems_of(rows)
    assert first.info == {"reference": r"\frac{1}{2}"} and second.info == {"reference": "[2,5)"}
    says = "Final Answer: The final answer is ${}$. I hope it is correct."
    completions = [
        [says.format("0.5"), says.format(r"\dfrac{1}{2}"), says.format("1/3"), r"$\boxed{\frac{1}{2}}$"],
        [says.format("[2,5)"), says.format("[2, 5)"), says.format("(2,5)"), r"\boxed{[2,5)}"],
    ]
    graded = grade_problems(math_bench.BENCHMARK, [first, second], completions)
    assert graded == [[True, True, False, False], [True, True, False, False]]
    assert math_bench.BENCHMARK.answer(says.format(r"\frac12")) == r"\frac{1}{2}"
    boxed = math_bench.problems_of(rows, style="boxed")
    assert [math_bench.is_correct(boxed[0], c) for c in completions[0]] == [False, False, False, True]
    with pytest.raises(DataError, match="unknown style"):
        math_bench.problems_of(rows, style="lm-eval")


# --- stdout comparison and CodeContests ---------------------------------------------------------------------


def result(stdout: str, returncode: int = 0, timed_out: bool = False, truncated: bool = False) -> ExecResult:
    return ExecResult(returncode, stdout, "", timed_out, 0.1, truncated)


def test_stdout_comparison_ignores_only_trailing_whitespace():
    assert normalize_output("1 2  \r\n3\t\n\n\n") == "1 2\n3"
    expect = Check("", expected_stdout="1 2\n3\n")
    assert check_passes(expect, result("1 2   \n3"))
    assert check_passes(expect, result("1 2\r\n3\r\n\r\n"))
    assert not check_passes(expect, result(" 1 2\n3\n"))  # leading whitespace counts
    assert not check_passes(expect, result("1 2\n\n3\n"))  # so do inner blank lines
    assert not check_passes(expect, result("1 2\n4\n"))
    assert not check_passes(expect, result("1 2\n3\n", returncode=1))
    assert not check_passes(expect, result("1 2\n3\n", timed_out=True))
    assert not check_passes(expect, result("1 2\n3\n", truncated=True))
    assert check_passes(Check(""), result("anything"))  # no expected output: the exit status decides


def contest_row(**overrides) -> dict:
    row = {
        "name": "1A. Sum",
        "description": "Print a + b.",
        "public_tests": {"input": ["1 2\n"], "output": ["3\n"]},
        "private_tests": {"input": ["10 -4\n"], "output": ["6\n"]},
        "generated_tests": {"input": ["1000000 1000000\n"], "output": ["2000000\n"]},
        "time_limit": {"seconds": 1, "nanos": 0},
        "memory_limit_bytes": 256 * 2**20,
    }
    return {**row, **overrides}


def test_time_limits():
    assert codecontests.time_limit_seconds({"seconds": 2, "nanos": 500_000_000}) == 2.5
    assert codecontests.time_limit_seconds(None) == codecontests.DEFAULT_TIME_LIMIT_S
    assert codecontests.time_limit_seconds({"seconds": 0, "nanos": 0}) == codecontests.DEFAULT_TIME_LIMIT_S
    limits = codecontests.Limits(time_scale=2.0, startup_s=0.5, min_memory_mb=512)
    assert limits.timeout_s(1.5) == 3.5
    assert limits.memory_mb(256 * 2**20) == 512 and limits.memory_mb(2**31) == 2048


def test_codecontests_grades_every_test_kind_by_stdout(tmp_path):
    data = write_jsonl(tmp_path / "test.jsonl", [
        contest_row(), contest_row(name="2B. Empty", public_tests=None, private_tests=None, generated_tests=None)])
    (problem,) = codecontests.load_codecontests(data)  # the problem without tests is dropped
    assert problem.problem_id == "1A. Sum" and problem.info == {"n_tests": 3, "time_limit_s": 1.0}
    assert problem.prompt.startswith("Print a + b.\n\n") and problem.prompt.endswith("```python\n")
    right = "a, b = map(int, input().split())\nprint(a + b, '  ')\n\n"
    wrong = "a, b = map(int, input().split())\nprint(a - b)\n"
    public_only = "print(3)\n"  # passes the public test, fails the private one
    overflow = "a, b = map(int, input().split())\nprint(a + b if a < 1000 else -1)\n"  # fails the generated one
    slow = "import time\ntime.sleep(30)\nprint(3)\n"
    crash = "raise SystemExit(3)\n"
    completions = [[right, wrong, public_only, overflow, slow, crash, right]]
    limits = codecontests.Limits(time_scale=1.0, startup_s=1.0)
    graded = grade_problems(codecontests.BENCHMARK, [problem], completions)
    assert graded == [[True, False, False, False, False, False, True]]
    checks = codecontests.contest_checks(problem.data, right, limits=limits)
    assert [(c.stdin, c.expected_stdout, c.timeout_s) for c in checks] == [
        ("1 2\n", "3\n", 2.0), ("10 -4\n", "6\n", 2.0), ("1000000 1000000\n", "2000000\n", 2.0)]


def test_codecontests_bad_row_is_named(tmp_path):
    data = write_jsonl(tmp_path / "bad.jsonl", [contest_row(public_tests={"input": ["1"], "output": []})])
    with pytest.raises(DataError, match="1A. Sum"):
        codecontests.load_codecontests(data)


# --- HumanEval and MBPP ------------------------------------------------------------------------------------


def test_humaneval_grades_right_and_wrong_and_unsafe_reaches_the_runner(tmp_path):
    problems = humaneval.load_humaneval()[:2]
    canonical = [p.data["canonical_solution"] for p in problems]
    secret = tmp_path / "host-only.txt"  # a host file: the sandbox sees only /usr and its own empty /tmp
    secret.write_text("x")
    reads_host = f"    open({str(secret)!r}).read()\n" + canonical[0]
    completions = [[canonical[0], "    return None\n", reads_host], [canonical[1], "    return []\n", canonical[1]]]
    assert grade_problems(humaneval.BENCHMARK, problems, completions) == [[True, False, False], [True, False, True]]
    with pytest.warns(RuntimeWarning, match="unsafe"):
        unsafe = grade_problems(humaneval.BENCHMARK, problems[:1], [[reads_host]],
                                sandbox=SandboxSettings(unsafe=True))
    assert unsafe == [[True]]
    assert humaneval.program(problems[0], "    pass\n").endswith(f"check({problems[0].data['entry_point']})\n")


MBPP_ROWS = [
    {"text": f"Write a function to add {k}.", "code": f"def add{k}(x):\r\n  return x + {k}", "task_id": k,
     "test_setup_code": "", "test_list": [f"assert add{k}(1) == {1 + k}", f"assert add{k}(0) == {k}"],
     "challenge_test_list": []}
    for k in (2, 3, 4, 11, 12)
]


def test_mbpp_prompt_layout_and_fewshot_tasks(tmp_path):
    data = write_jsonl(tmp_path / "mbpp.jsonl", MBPP_ROWS)
    zero = mbpp.load_mbpp(data, n_shot=0)
    assert [p.problem_id for p in zero] == ["11", "12"]
    assert zero[0].prompt == (
        "You are an expert Python programmer, and here is your task: Write a function to add 11. "
        "Your code should pass these tests:\n\nassert add11(1) == 12\nassert add11(0) == 11\n[BEGIN]\n")
    three = mbpp.load_mbpp(data)
    shots = three[0].prompt.split("\n\n" + "You are")
    assert len(shots) == 4 and three[0].prompt.endswith(zero[0].prompt)
    assert "[BEGIN]\ndef add2(x):\n  return x + 2\n[DONE]" in shots[0] and "add4" in shots[2]
    assert [p.problem_id for p in mbpp.load_mbpp(data, task_ids=[12, 2])] == ["2", "12"]
    no_shots = write_jsonl(tmp_path / "noshots.jsonl", MBPP_ROWS[3:])
    with pytest.raises(DataError, match=r"few-shot task\(s\) \[2, 3, 4\]"):
        mbpp.load_mbpp(no_shots)
    assert len(mbpp.load_mbpp(no_shots, n_shot=0)) == 2
    with pytest.raises(DataError, match="none of the"):
        mbpp.load_mbpp(data, task_ids=[500])


def test_mbpp_sanitized_layout_and_grading(tmp_path):
    rows = [{"source_file": "x", "task_id": 11, "prompt": "Write a function returning pi.",
             "code": "def get_pi():\n    return 3.14159", "test_imports": ["import math"],
             "test_list": ["assert math.isclose(get_pi(), 3.14159)"]}]
    data = tmp_path / "sanitized.json"
    data.write_text(json.dumps(rows))
    (problem,) = mbpp.load_mbpp(data, n_shot=0)
    assert problem.data.setup == "import math" and "assert math.isclose" in problem.prompt
    completions = [["def get_pi():\n    return 3.14159\n", "def get_pi():\n    return 3\n", "def get_pi(:\n"]]
    assert grade_problems(mbpp.BENCHMARK, [problem], completions) == [[True, False, False]]


# --- HellaSwag ---------------------------------------------------------------------------------------------


HELLASWAG_ROWS = [
    {"ind": 4, "activity_label": "Removing ice from car", "ctx_a": "Then, the man writes over the snow.",
     "ctx_b": "then", "ctx": "Then, the man writes over the snow. then",
     "endings": [", the man adds wax to the windshield.", ", a person board a ski lift.",
                 ", the man puts on a christmas coat.", ", the man continues removing the snow on his car."],
     "label": 3},
    {"ind": 9, "activity_label": "Baking cookies", "ctx": "A [title] woman mixes flour.",
     "endings": ["She bakes.", "He swims far away.", "It rains.", "Dogs."], "label": "0"},
    {"ind": 11, "ctx": "The cat sat", "endings": [" on the mat.", " in a box.", " quietly.", " down."], "label": ""},
]


def test_hellaswag_loader_and_preprocessing(tmp_path):
    data = write_jsonl(tmp_path / "hellaswag.jsonl", HELLASWAG_ROWS)
    first, second = hellaswag.load_hellaswag(data)  # the unlabelled row is skipped
    assert first.problem_id == "4" and first.data.label == 3
    assert first.prompt == "Removing ice from car: Then, the man writes over the snow. Then"
    assert first.data.endings[3] == " , the man continues removing the snow on his car."
    assert second.prompt == "Baking cookies: A. woman mixes flour." and second.data.label == 0
    bad = write_jsonl(tmp_path / "bad.jsonl", [{**HELLASWAG_ROWS[0], "label": 7}])
    with pytest.raises(DataError, match="out of range"):
        hellaswag.load_hellaswag(bad)


def test_hellaswag_accuracy_raw_and_per_character():
    item = hellaswag.Choice("ctx", (" a", " bbbbbbbbb", " cc"), label=1)
    problems = [Problem("x", "ctx", data=item)]
    # raw: ending 0 wins (-2 > -5); per character of the ending without its space: ending 1 wins (-5/9 > -2/1
    # and > -4/2)
    (row,) = hellaswag.score_items(problems, [[-2.0, -5.0, -4.0]])
    assert (row["pred"], row["pred_norm"], row["correct"], row["correct_norm"]) == (0, 1, False, True)


def test_hellaswag_acc_norm_divides_by_the_ending_without_its_space_as_lm_eval():
    """lm-eval scores " " + choice but divides by len(choice): dividing by len(" " + choice) (the earlier bug)
    picks ending 0 here (-1.5/2 > -4/4), lm-eval's length picks ending 1 (-4/3 > -1.5/1)."""
    item = hellaswag.Choice("ctx", (" a", " bbb"), label=1)
    (row,) = hellaswag.score_items([Problem("x", "ctx", data=item)], [[-1.5, -4.0]])
    assert (row["pred"], row["pred_norm"], row["correct_norm"]) == (0, 1, True)
    assert [hellaswag.norm_length(e) for e in item.endings] == [1, 3]


@pytest.fixture(scope="module")
def tiny_model_and_tokenizer():
    texts = [r["ctx"] + e for r in HELLASWAG_ROWS for e in r["endings"]] * 3
    tokenizer = train_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    model = MTPModel.from_config(
        ModelConfig(d_model=32, n_layers=2, n_heads=2, n_attn_heads=4), vocab_size=len(tokenizer),
        pad_id=tokenizer.pad_token_id, bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id)
    return model, tokenizer


def test_continuation_logprobs_equal_a_naive_full_forward(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    pairs = [("The cat sat", " on the mat."), ("A woman", " bakes."), ("Then, the man writes", " over the snow now")]
    got = hellaswag.continuation_logprobs(model, tokenizer, pairs, batch_size=2)
    with torch.no_grad():
        for (context, continuation), value in zip(pairs, got):
            ctx = [tokenizer.bos_token_id] + tokenizer.encode(context, add_special_tokens=False)
            cont = tokenizer.encode(continuation, add_special_tokens=False)
            logp = torch.log_softmax(model(torch.tensor([ctx + cont]))[0, :, 0].float(), -1)  # head 1: [T,V]
            oracle = sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont))
            assert value == pytest.approx(oracle, abs=1e-4)


def test_evaluate_hellaswag_reports_both_accuracies(tmp_path, tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    problems = hellaswag.load_hellaswag(write_jsonl(tmp_path / "h.jsonl", HELLASWAG_ROWS))
    out = hellaswag.evaluate_hellaswag(model, tokenizer, problems, batch_size=3, progress=False)
    assert out["benchmark"] == "hellaswag" and out["n_problems"] == 2 and set(out["summary"]) == {"acc", "acc_norm"}
    rows = out["per_problem"]
    assert [r["problem_id"] for r in rows] == ["4", "9"] and all(len(r["logprobs"]) == 4 for r in rows)
    assert out["summary"]["acc"] == sum(r["correct"] for r in rows) / 2


# --- the shared harness ------------------------------------------------------------------------------------


def test_read_rows_formats_and_errors(tmp_path):
    rows = [{"a": 1}, {"a": 2}]
    assert read_rows(write_jsonl(tmp_path / "x.jsonl", rows)) == rows
    (tmp_path / "x.json").write_text(json.dumps(rows))
    assert read_rows(tmp_path / "x.json") == rows
    with gzip.open(tmp_path / "x.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    assert read_rows(tmp_path / "x.jsonl.gz") == rows
    with pytest.raises(DataError, match="does not exist"):
        read_rows(tmp_path / "absent.jsonl")
    (tmp_path / "x.csv").write_text("a\n1\n")
    with pytest.raises(DataError, match="unknown format"):
        read_rows(tmp_path / "x.csv")
    (tmp_path / "broken.jsonl").write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(DataError, match="broken.jsonl"):
        read_rows(tmp_path / "broken.jsonl")
    (tmp_path / "scalar.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="list of JSON objects"):
        read_rows(tmp_path / "scalar.json")
    with pytest.raises(DataError, match="lacks \\['b'\\]"):
        require_keys(rows, ("a", "b"), benchmark="x")
    with pytest.raises(DataError, match="exactly one"):
        rows_from(data_file=None, dataset=None, split=None, benchmark="x")


def test_hub_dataset_without_the_datasets_package_is_a_clear_error():
    try:
        import datasets  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("`datasets` is installed: the error path cannot be reached without a download")
    with pytest.raises(DataError, match="pip install datasets"):
        rows_from(data_file=None, dataset="openai/gsm8k:main", split="test", benchmark="gsm8k")


def test_run_checks_dedups_and_keeps_order():
    ok, bad = Check("print(1)", expected_stdout="1"), Check("print(2)", expected_stdout="1")
    assert run_checks([[ok], [bad], [ok, bad], [], [ok, ok]], workers=2) == [True, False, False, True, True]


def test_report_shape_pairs_by_problem():
    problems = [Problem("a", "p", info={"difficulty": "easy"}), Problem("b", "q")]
    sampling = SamplingConfig(temperature=0.8, n=3)
    out = report("x", problems, [["1", "2", "3"], ["4", "5", "6"]], [[True, False, False], [True, True, True]],
                 sampling=sampling, ks=(1, 2, 10), sandbox={"unsafe": False})
    assert list(out) == ["benchmark", "summary", "n_problems", "sampling", "sandbox", "per_problem"]
    assert out["summary"] == {"pass@1": pytest.approx((1 / 3 + 1) / 2), "pass@2": pytest.approx((2 / 3 + 1) / 2)}
    assert out["per_problem"][0] == {"problem_id": "a", "difficulty": "easy", "n": 3, "c": 1,
                                     "passed": [True, False, False], "sample": "1"}
    assert out["sampling"]["n"] == 3 and out["sandbox"] == {"unsafe": False}
