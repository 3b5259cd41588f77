"""The command line turns user errors into one clear message and exit code 2."""

from __future__ import annotations

from typer.testing import CliRunner

from wmtp.cli import app

runner = CliRunner()


def test_unknown_key_is_named_with_allowed_keys(tmp_path):
    result = runner.invoke(app, ["train", f"run_dir={tmp_path}/r", "optim.lrr=1"])
    assert result.exit_code == 2
    assert "optim.lrr" in result.output and "lr" in result.output and "Traceback" not in result.output


def test_bad_value_is_named(tmp_path):
    result = runner.invoke(app, ["train", f"run_dir={tmp_path}/r", "train.precision=fp8"])
    assert result.exit_code == 2
    assert "train.precision" in result.output and "bf16" in result.output


def test_missing_data_directory_is_named(tmp_path):
    result = runner.invoke(app, ["train", f"run_dir={tmp_path}/r", f"data.path={tmp_path}/nowhere"])
    assert result.exit_code == 2
    assert f"{tmp_path}/nowhere" in result.output


def test_missing_data_file_is_named(tmp_path):
    (tmp_path / "data").mkdir()
    result = runner.invoke(app, ["train", f"run_dir={tmp_path}/r", f"data.path={tmp_path}/data"])
    assert result.exit_code == 2
    assert "train.jsonl" in result.output


def test_missing_config_file(tmp_path):
    result = runner.invoke(app, ["train", "--config", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2
    assert "absent.yaml" in result.output
