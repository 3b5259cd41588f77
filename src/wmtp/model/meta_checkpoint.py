"""Load Meta's released multi-token checkpoints (facebook/multi-token-prediction, llama reference layout).

A checkpoint directory holds `params.json` (dim, n_layers, n_heads, n_kv_heads?, vocab_size, multiple_of,
ffn_dim_multiplier?, norm_eps, rope_theta?, n_future_tokens), `consolidated.pth` and `tokenizer.model`
(sentencepiece; here or in the parent directory). Meta's Transformer with n = n_future_tokens:
    layers:      n_layers − n + 1 blocks;  extra_heads: the other n − 1 blocks
    z = layers[:-1](tok_embeddings(x))      the trunk
    head 1 = layers[-1](z),  head j+2 = extra_heads[j](z),  logits = output(norm(head))   (norm, output shared)
which is an MTPModel with head1_is_trunk_layer=True and an untied unembedding. Meta's heads predict t+1..t+n, so
the model keeps head offsets 1..H (leap heads are refused).
Meta's rotary embedding rotates dimension pairs (2i, 2i+1) (complex form); HF Llama rotates (i, i + d/2)
(rotate-half). The rows of wq and wk are therefore permuted within each attention head, as in transformers'
convert_llama_weights_to_hf, so that both give the same attention scores.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from wmtp.model.checkpoints import CheckpointError
from wmtp.model.mtp import MTPModel
from wmtp.model.offsets import is_default

PARAMS_FILE = "params.json"
WEIGHTS_FILE = "consolidated.pth"
TOKENIZER_FILE = "tokenizer.model"

# Meta block parameter name → HF LlamaDecoderLayer parameter name.
_BLOCK_KEYS = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}


def is_meta_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a directory in Meta's native layout (params.json + consolidated.pth)."""
    path = Path(path)
    return (path / PARAMS_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def ffn_hidden_dim(dim: int, multiple_of: int, ffn_dim_multiplier: float | None) -> int:
    """Meta's FeedForward width: 2/3 · 4·dim, times the multiplier, rounded up to a multiple of `multiple_of`."""
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def read_params(path: str | Path) -> dict[str, Any]:
    file = Path(path) / PARAMS_FILE
    try:
        params = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {file}: {err}") from None
    missing = [k for k in ("dim", "n_layers", "n_heads", "vocab_size", "multiple_of", "norm_eps") if k not in params]
    if missing:
        raise CheckpointError(f"{file} lacks {', '.join(missing)}: not a Meta llama params file")
    if params.get("use_scaled_rope"):
        raise CheckpointError(f"{file} asks for Llama-3.1 scaled RoPE, which this loader does not implement")
    if params["vocab_size"] <= 0:
        raise CheckpointError(f"{file} has vocab_size={params['vocab_size']}; set it to the tokenizer's size")
    return params


def trunk_config(params: dict[str, Any]) -> LlamaConfig:
    """HF LlamaConfig of the trunk + head 1 (n_layers − n_future_tokens + 1 blocks)."""
    n_future = params.get("n_future_tokens", 1)
    return LlamaConfig(
        vocab_size=params["vocab_size"],
        hidden_size=params["dim"],
        intermediate_size=ffn_hidden_dim(params["dim"], params["multiple_of"], params.get("ffn_dim_multiplier")),
        num_hidden_layers=params["n_layers"] - n_future + 1,
        num_attention_heads=params["n_heads"],
        num_key_value_heads=params.get("n_kv_heads") or params["n_heads"],
        max_position_embeddings=params.get("max_seq_len", 4096),
        rms_norm_eps=params["norm_eps"],
        rope_theta=params.get("rope_theta", 10000.0),
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )


def _rotary_rows_to_hf(w: Tensor, n_heads: int) -> Tensor:
    """Permute the rows [n_heads·hd, D] of wq/wk from interleaved pairs (2i, 2i+1) to halves (i, i + hd/2)."""
    rows, dim = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, dim).transpose(1, 2).reshape(rows, dim)


def _block_state(sd: dict[str, Tensor], prefix: str, cfg: LlamaConfig) -> dict[str, Tensor]:
    out = {}
    for meta_key, hf_key in _BLOCK_KEYS.items():
        key = prefix + meta_key
        if key not in sd:
            raise CheckpointError(f"{WEIGHTS_FILE} lacks {key}")
        w = sd[key]
        if meta_key == "attention.wq.weight":
            w = _rotary_rows_to_hf(w, cfg.num_attention_heads)
        elif meta_key == "attention.wk.weight":
            w = _rotary_rows_to_hf(w, cfg.num_key_value_heads)
        out[hf_key] = w
    return out


def convert_state_dict(sd: dict[str, Tensor], params: dict[str, Any]) -> tuple[dict[str, Tensor], list[dict]]:
    """(HF trunk state dict, one block state dict per extra head) from Meta's consolidated state dict."""
    cfg = trunk_config(params)
    n_extra = params.get("n_future_tokens", 1) - 1
    trunk = {
        "model.embed_tokens.weight": sd["tok_embeddings.weight"],
        "model.norm.weight": sd["norm.weight"],
        "lm_head.weight": sd["output.weight"],
    }
    for i in range(cfg.num_hidden_layers):
        for name, w in _block_state(sd, f"layers.{i}.", cfg).items():
            trunk[f"model.layers.{i}.{name}"] = w
    heads = [_block_state(sd, f"extra_heads.{j}.", cfg) for j in range(n_extra)]
    known = {"rope.freqs", "tok_embeddings.weight", "norm.weight", "output.weight"}
    prefixes = [f"layers.{i}." for i in range(cfg.num_hidden_layers)] + [f"extra_heads.{j}." for j in range(n_extra)]
    unexpected = [k for k in sd if k not in known and not any(k.startswith(p) for p in prefixes)]
    if unexpected:
        raise CheckpointError(f"{WEIGHTS_FILE} has tensors this layout does not explain: {unexpected[:5]}")
    return trunk, heads


def load_meta_checkpoint(
    path: str | Path,
    *,
    n_heads: int | None = None,
    head_offsets: Sequence[int] | None = None,
    dtype: torch.dtype = torch.float32,
) -> MTPModel:
    """An MTPModel holding Meta's trunk and heads. n_heads (default n_future_tokens): fewer keeps the first
    heads; more adds heads initialised as copies of head 1's block (like a pretrained trunk). head_offsets: None
    or 1..H; Meta's heads were trained on t+1..t+n, so any other offsets are a CheckpointError."""
    path = Path(path)
    if head_offsets is not None and not is_default(head_offsets):
        raise CheckpointError(
            f"model.head_offsets={list(head_offsets)}: a Meta multi-token checkpoint keeps head offsets 1..H "
            f"(its heads predict t+1..t+n); leave model.head_offsets unset"
        )
    if not is_meta_checkpoint(path):
        raise CheckpointError(f"{path} is not a Meta checkpoint directory (needs {PARAMS_FILE} and {WEIGHTS_FILE})")
    params = read_params(path)
    try:
        sd = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError) as err:
        raise CheckpointError(f"cannot read {path / WEIGHTS_FILE}: {err}") from None
    trunk_sd, heads_sd = convert_state_dict(sd, params)
    cfg = trunk_config(params)
    with torch.device("meta"):  # no random init of billions of weights: loading assigns the real tensors
        trunk = LlamaForCausalLM(cfg)
    trunk.load_state_dict({k: v.to(dtype) for k, v in trunk_sd.items()}, strict=True, assign=True)
    trunk.get_decoder().rotary_emb = LlamaRotaryEmbedding(config=cfg)  # a buffer-only module, not in the file
    n_heads = n_heads or params.get("n_future_tokens", 1)
    heads = nn.ModuleList()
    last = trunk.get_decoder().layers[-1]
    for j in range(n_heads - 1):
        block = copy.deepcopy(last)
        if j < len(heads_sd):
            block.load_state_dict({k: v.to(dtype) for k, v in heads_sd[j].items()}, strict=True)
        block.self_attn.layer_idx = cfg.num_hidden_layers + j  # distinct KV-cache slot per head
        heads.append(block)
    return MTPModel(trunk, heads, head1_is_trunk_layer=True)


def load_meta_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The sentencepiece tokenizer.model of a Meta checkpoint (in `path` or its parent) as an HF tokenizer.
    Needs `sentencepiece` and `protobuf` (pip install -e ".[meta]"). Meta's tokenizers have no padding token:
    padding uses unk (padded positions are masked out of attention and loss)."""
    from transformers import LlamaTokenizer

    path = Path(path)
    for directory in (path, path.parent):
        if (directory / TOKENIZER_FILE).is_file():
            try:
                tok = LlamaTokenizer.from_pretrained(str(directory))
            except (ImportError, ValueError) as err:
                raise CheckpointError(
                    f"cannot read {directory / TOKENIZER_FILE} ({err}); install sentencepiece and protobuf: "
                    'pip install -e ".[meta]"'
                ) from None
            if tok.pad_token is None:
                tok.pad_token = tok.unk_token
            return tok
    raise CheckpointError(f"no {TOKENIZER_FILE} in {path} or {path.parent}")
