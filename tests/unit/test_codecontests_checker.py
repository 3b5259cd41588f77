"""CodeContests output comparison as DeepMind's official checker (code_contests execution/tester_sandboxer.cc,
OutputsMatch): cases both ways, then through `wmtp.eval.grade` in the sandbox."""

from __future__ import annotations

import pytest

from wmtp.eval import grade
from wmtp.eval.benchmarks.codecontests import outputs_match


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("YES\n", "yes"),  # case
        ("Yes", "yEs"),
        ("0.500000\n", "0.5\n"),  # numbers within 1e-5 absolute
        ("3.0000001", "3"),
        ("1e-6", "0"),
        ("-0.3333334", "-0.333333"),
        ("1 2 3", "1\n2\n3"),  # any run of whitespace separates tokens
        ("  1\t2\r\n3 \v\n\n", "1 2 3"),
        ("", "\n \n"),
        ("+5", "5"),
        ("inf", "inf"),
    ],
)
def test_official_checker_accepts(output, expected):
    assert outputs_match(output, expected) and outputs_match(expected, output)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("NO", "YES"),
        ("0.50002", "0.5"),  # 2e-5 apart
        ("100000.1", "100000"),  # the tolerance is absolute, not relative
        ("1 2", "1 2 3"),
        ("12", "1 2"),
        ("1 2 3", "3 2 1"),
        ("abc", "abd"),
        ("0.5", "half"),
        ("1_0", "10"),  # Python's float() would take it; absl's SimpleAtod does not
        ("\f1", "1"),  # \f is not a separator there
        ("a inf", "b inf"),
    ],
)
def test_official_checker_rejects(output, expected):
    assert not outputs_match(output, expected) and not outputs_match(expected, output)


def test_grade_compares_as_the_official_checker():
    row = {"name": "1A. Half", "description": "Print YES and n / 2.",
           "public_tests": {"input": ["1\n"], "output": ["YES\n0.5\n"]},
           "private_tests": {"input": ["3\n"], "output": ["YES\n1.5\n"]},
           "generated_tests": None, "time_limit": {"seconds": 1, "nanos": 0}, "memory_limit_bytes": 256 * 2**20}
    loose = "n = int(input())\nprint('yes', f'{n / 2:.6f}')\n"
    exact = "n = int(input())\nprint('YES')\nprint(n / 2)\n"
    wrong = "n = int(input())\nprint('YES')\nprint(n // 2)\n"
    crash = "n = int(input())\nprint('YES')\nprint(n / 2)\nraise SystemExit(1)\n"
    assert grade("codecontests", [row], [[loose, exact, wrong, crash]]) == [[True, True, False, False]]
