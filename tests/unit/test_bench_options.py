"""--bench-option KEY=VALUE: a benchmark's own loader settings, typed by the loader's defaults, unknown ones refused."""

from __future__ import annotations

import json

import pytest

from wmtp.data.records import DataError
from wmtp.eval.benchmarks import math as math_bench
from wmtp.eval.benchmarks.base import DataSource
from wmtp.eval.benchmarks.registry import BENCHMARKS


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_an_option_reaches_the_loader_as_its_keyword(tmp_path):
    data = write_jsonl(tmp_path / "math.jsonl", [{"problem": "What is $1+1$?", "solution": r"So $\boxed{2}$."}])
    via_option = BENCHMARKS["math"].load(DataSource(data_file=data, n_shot=0, options={"style": "boxed"}))
    direct = math_bench.load_math(data, n_shot=0, style="boxed")
    default = BENCHMARKS["math"].load(DataSource(data_file=data, n_shot=0))
    assert [p.prompt for p in via_option] == [p.prompt for p in direct]
    assert [p.prompt for p in via_option] != [p.prompt for p in default]


def test_options_are_typed_and_checked(tmp_path):
    rows = [{"question": f"q{i}?", "answer": f"a\n#### {i}"} for i in range(8)]
    test, train = write_jsonl(tmp_path / "t.jsonl", rows[:2]), write_jsonl(tmp_path / "tr.jsonl", rows)
    load = BENCHMARKS["gsm8k"].load
    seven = load(DataSource(data_file=test, n_shot=3, fewshot_file=train, options={"seed": "7"}))
    default = load(DataSource(data_file=test, n_shot=3, fewshot_file=train))
    assert [p.prompt for p in seven] != [p.prompt for p in default]  # another seed draws other examples
    with pytest.raises(DataError, match="seed=x: expected a value of type int"):
        load(DataSource(data_file=test, n_shot=0, options={"seed": "x"}))
    with pytest.raises(DataError, match="not a setting of this benchmark; its settings: seed, answer_filter"):
        load(DataSource(data_file=test, n_shot=0, options={"sede": "1"}))
    with pytest.raises(DataError, match="synthetic has no settings"):
        BENCHMARKS["synthetic"].load(DataSource(data_file=test, options={"seed": "1"}))


def test_the_cli_refuses_an_option_without_a_value(tmp_path):
    from typer.testing import CliRunner

    from wmtp.cli import app

    result = CliRunner().invoke(app, ["eval", "--bench", "math", "--bench-option", "style", "--hf-model", "x",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output


def test_a_request_without_max_new_tokens_gets_the_benchmarks_budget():
    from wmtp.eval.generate import SamplingConfig

    unset = SamplingConfig(max_new_tokens=None)
    assert BENCHMARKS["humaneval"].sampling(unset).max_new_tokens == 1024
    assert BENCHMARKS["humaneval_plus"].sampling(unset).max_new_tokens == 1024
    assert BENCHMARKS["gsm8k"].sampling(unset).max_new_tokens == 256
    assert BENCHMARKS["humaneval"].sampling(SamplingConfig(max_new_tokens=64)).max_new_tokens == 64
    assert BENCHMARKS["gsm8k"].sampling(unset).stop == BENCHMARKS["gsm8k"].stop
