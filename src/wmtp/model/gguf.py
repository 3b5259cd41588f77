"""GGUF files (llama.cpp's format) as ordinary fp32 Hugging Face models and tokenizers.

transformers reads a `.gguf` file and dequantises its tensors (`from_pretrained(dir, gguf_file=name)`, which
needs the `gguf` and `accelerate` packages: the `gguf` extra). The config it returns carries a
`quantization_config` marking the model as GGUF-loaded; it is dropped and the dequantised state dict is loaded
into a fresh model of the same class, so what wmtp trains, exports and saves is a plain fp32 causal LM.
"""

from __future__ import annotations

import importlib.util
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers import PreTrainedTokenizerFast

GGUF_SUFFIX = ".gguf"
INSTALL_HINT = 'pip install -e ".[gguf]"'


class GGUFError(ValueError):
    """A `.gguf` path that cannot be loaded (missing file, missing packages)."""


def is_gguf(path_or_name: str | Path) -> bool:
    """True for a path naming a `.gguf` file (whether or not it exists: loading it then says it is missing)."""
    return str(path_or_name).lower().endswith(GGUF_SUFFIX)


def _locate(path: str | Path) -> tuple[str, str]:
    """(directory, file name) of an existing `.gguf` file, after checking the packages transformers needs."""
    missing = [pkg for pkg in ("gguf", "accelerate") if importlib.util.find_spec(pkg) is None]
    if missing:
        raise GGUFError(f"loading {path} needs the package(s) {', '.join(missing)}: {INSTALL_HINT}")
    file = Path(path).expanduser()
    if not file.is_file():
        raise GGUFError(f"GGUF file {file} does not exist")
    return str(file.parent), file.name


@contextmanager
def _reading(path: str | Path) -> Iterator[None]:
    """What transformers raises on a file that is not a (supported) GGUF model, as a GGUFError naming it."""
    try:
        yield
    except (OSError, ValueError, KeyError, struct.error) as err:
        raise GGUFError(f"{path} could not be read as a GGUF model: {err}") from err


def load_gguf_config(path: str | Path) -> PretrainedConfig:
    """The model config from the file's metadata (no tensors read), without `quantization_config`."""
    directory, name = _locate(path)
    with _reading(path):
        config = AutoConfig.from_pretrained(directory, gguf_file=name)
    config.__dict__.pop("quantization_config", None)
    return config


def load_gguf_causal_lm(path: str | Path, *, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A plain causal LM (e.g. LlamaForCausalLM) holding the file's dequantised weights in `dtype`.

    The fresh model's random init is drawn under a forked RNG, so loading does not move the global RNG.
    """
    directory, name = _locate(path)
    with _reading(path):
        loaded = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=dtype)
    config = loaded.config
    config.__dict__.pop("quantization_config", None)
    with torch.random.fork_rng(devices=[]):
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=dtype)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise GGUFError(f"{path}: dequantised weights do not fit {type(model).__name__} "
                        f"(missing {sorted(set(missing) - tied)}, unexpected {sorted(unexpected)})")
    model.tie_weights()
    return model.eval()


def load_gguf_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """The tokenizer stored in the file's metadata (a fast tokenizer)."""
    directory, name = _locate(path)
    with _reading(path):
        return AutoTokenizer.from_pretrained(directory, gguf_file=name)


def convert_gguf(path: str | Path, out_dir: str | Path, *, dtype: torch.dtype = torch.float32) -> Path:
    """Write the file as an HF model directory (config, safetensors in `dtype`, tokenizer) into `out_dir`."""
    out = Path(out_dir)
    load_gguf_causal_lm(path, dtype=dtype).save_pretrained(str(out))
    load_gguf_tokenizer(path).save_pretrained(str(out))
    return out
