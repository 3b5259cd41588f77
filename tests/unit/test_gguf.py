"""`.gguf` paths everywhere a pretrained model is named: recognised, errors that say what is missing (the file, or
the `gguf` extra), the Rho-1 reference's kind and identity. Loading a real file: tests/integration/test_real_model.py."""

from __future__ import annotations

import importlib.util

import pytest

from wmtp.data.records import DataError
from wmtp.data.tokenizer import load_tokenizer
from wmtp.eval.evaluate import load_eval_model
from wmtp.model.checkpoints import CheckpointError
from wmtp.model.gguf import GGUFError, is_gguf, load_gguf_causal_lm, load_gguf_config
from wmtp.model.mtp import MTPModel
from wmtp.weighting.reference import reference_identity, reference_tokenizer, resolve_reference


def test_is_gguf():
    assert is_gguf("models/SmolLM2.Q4_1.gguf") and is_gguf("/x/M.GGUF")
    assert not is_gguf("HuggingFaceTB/SmolLM2-135M") and not is_gguf("/x/gguf")


def test_missing_packages_name_the_extra(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(GGUFError, match=r'package\(s\) gguf: pip install -e "\.\[gguf\]"'):
        load_gguf_causal_lm(tmp_path / "m.gguf")
    with pytest.raises(DataError, match=r"pip install -e"):
        load_tokenizer(str(tmp_path / "m.gguf"))


def test_missing_file_is_an_error_everywhere(tmp_path):
    missing = str(tmp_path / "none.gguf")
    with pytest.raises(GGUFError, match="does not exist"):
        load_gguf_config(missing)
    with pytest.raises(GGUFError, match="does not exist"):
        MTPModel.from_pretrained_trunk(missing, n_heads=2)
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer(missing)
    with pytest.raises(CheckpointError, match="could not be loaded.*does not exist"):
        load_eval_model(hf_model=missing)
    with pytest.raises(DataError, match="does not exist"):
        resolve_reference(missing)


def test_reference_from_a_gguf_file(tmp_path):
    path = tmp_path / "ref.gguf"
    path.write_bytes(b"GGUF first")
    source = resolve_reference(str(path))
    assert source.kind == "gguf" and source.model_dir is None
    first = reference_identity(source)
    assert first.startswith("gguf:")
    path.write_bytes(b"GGUF second")
    assert reference_identity(source) != first
    with pytest.raises(DataError, match="could not be read as a GGUF model"):  # a header, nothing else
        reference_tokenizer(source)
    with pytest.raises(GGUFError, match="could not be read as a GGUF model"):
        load_gguf_config(path)
