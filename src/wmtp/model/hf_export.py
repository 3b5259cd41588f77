"""Export head 1 of an MTPModel as a plain HF causal LM (what `AutoModelForCausalLM` loads and `generate` runs).

Head 1 is next-token prediction (its offset is always 1, leap heads too): the trunk's shared blocks, head 1's
block, the shared final norm and unembedding.
When head 1 is the trunk's last block the trunk already is that model; otherwise head 1's block is appended to a
copy of the trunk's blocks. Extra heads are dropped.
"""

from __future__ import annotations

import copy
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from wmtp.model.mtp import MTPModel


def head1_causal_lm(model: MTPModel) -> PreTrainedModel:
    """A standalone HF `*ForCausalLM` whose logits are head 1's logits [B,T,V] (a copy; `model` is untouched)."""
    lm = copy.deepcopy(model.trunk)
    if not model.head1_is_trunk_layer:
        layers = lm.get_decoder().layers
        block = copy.deepcopy(model.head_block(1))
        block.self_attn.layer_idx = len(layers)  # its own KV-cache slot in the exported model
        layers.append(block)
        lm.config.num_hidden_layers = len(layers)
        layer_types = getattr(lm.config, "layer_types", None)  # per-layer attention kinds (qwen2/3, mistral)
        if layer_types is not None:
            lm.config.layer_types = [*layer_types[: len(layers) - 1], layer_types[-1]]
    return lm


def export_head1(
    model: MTPModel, directory: str | Path, tokenizer: PreTrainedTokenizerBase | None = None
) -> Path:
    """Write head 1 as an HF model directory (config.json + safetensors, plus the tokenizer when given)."""
    directory = Path(directory)
    head1_causal_lm(model).save_pretrained(str(directory))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    return directory
