"""MTPModel: an HF causal-LM trunk with H transformer-block heads sharing the final norm and unembedding.

Meta's multi-token prediction (Gloeckle et al. 2024):
    z = trunk(x)                       [B,T,D]   (the trunk's blocks, minus the last when it is head 1)
    h_k = norm(f_k(z))                 [B,T,D]   head k = one transformer block f_k
    logits_k = h_k @ Wᵀ                [B,T,V]   W = the trunk's (tied) unembedding
Head k predicts token t + head_offsets[k−1] (default t+k; leap heads, wmtp.model.offsets); head 1 always predicts
t+1. Head 1 is the trunk's own last block when `head1_is_trunk_layer` (then H=1 is exactly the HF model).
Supported trunks are the Llama family of HF decoders (embed_tokens, layers, norm, rotary_emb).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel
from transformers.masking_utils import create_causal_mask

from wmtp.config import ModelConfig
from wmtp.model.offsets import check_offsets
from wmtp.model.value_head import ValueHead

SUPPORTED_TRUNKS = ("llama", "mistral", "qwen2", "qwen3")


@dataclass
class TrunkContext:
    """What every block needs besides its input: the 4-D causal mask, RoPE tables and positions; and the input
    token ids Long[B,T] (for modules that read the model's own predictions of them, e.g. the critic's surprise)."""

    mask: Tensor | None
    position_embeddings: tuple[Tensor, Tensor]
    position_ids: Tensor
    input_ids: Tensor | None = None


def packed_positions_and_mask(segment_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Positions Long[B,T] (index within the record) and the attention mask Bool[B,1,T,T] of packed rows.

    mask[b,0,q,k] = (k <= q) & (segment_ids[b,q] == segment_ids[b,k]). Padding (id -1) is its own segment,
    so no query row is empty (an empty row would make sdpa return NaN).
    """
    B, T = segment_ids.shape
    idx = torch.arange(T, device=segment_ids.device)
    same = segment_ids[:, :, None] == segment_ids[:, None, :]  # [B,T,T]
    mask = same & (idx[None, :, None] >= idx[None, None, :])
    starts = torch.ones_like(segment_ids, dtype=torch.bool)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]  # first token of each record
    start_pos = torch.cummax(torch.where(starts, idx, 0), dim=1).values  # [B,T]: where this token's record starts
    return idx[None] - start_pos, mask[:, None]


class MTPModel(nn.Module):
    """Trunk + H heads. `trunk` is an HF `*ForCausalLM`; `heads` holds the extra blocks; head k predicts token
    t + head_offsets[k−1] (head_offsets: H positive, strictly increasing ints from 1; None = 1..H)."""

    def __init__(
        self,
        trunk: PreTrainedModel,
        heads: nn.ModuleList,
        *,
        head1_is_trunk_layer: bool,
        head_offsets: Sequence[int] | None = None,
    ):
        super().__init__()
        model_type = trunk.config.model_type
        if model_type not in SUPPORTED_TRUNKS:
            raise ValueError(f"trunk type {model_type!r} is not supported; supported: {', '.join(SUPPORTED_TRUNKS)}")
        self.trunk = trunk
        self.heads = heads
        self.head1_is_trunk_layer = head1_is_trunk_layer
        self.n_heads = len(heads) + int(head1_is_trunk_layer)
        if self.n_heads < 1:
            raise ValueError("an MTPModel needs at least one head")
        self.head_offsets: tuple[int, ...] = check_offsets(
            head_offsets, self.n_heads, name="head_offsets", next_token_head=True
        )
        self.value_head: ValueHead | None = None  # the critic's V(s_t); see attach_value_head

    def attach_value_head(self, kind: str, *, n_features: int = 0) -> ValueHead:
        """Add the critic's value head on the trunk output z (saved and loaded with the model); a `block` head
        starts as a copy of the trunk's last block; n_features: scalar features it also reads (ValueHead)."""
        block = copy.deepcopy(self.decoder.layers[-1]) if kind == "block" else None
        self.value_head = ValueHead(self.trunk.config.hidden_size, kind=kind, block=block, n_features=n_features)
        return self.value_head

    def values(self, z: Tensor, ctx: TrunkContext) -> Tensor:
        """The critic's V(s_t): Float[B,T] from the trunk output z [B,T,D]."""
        if self.value_head is None:
            raise ValueError("this model has no value head (MTPModel.attach_value_head)")
        if self.value_head.block is not None:
            z = self._run_block(self.value_head.block, z, ctx)
        return self.value_head(z)

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg: ModelConfig, *, vocab_size: int, pad_id: int, bos_id: int, eos_id: int) -> MTPModel:
        """A randomly initialised Llama-style trunk; extra heads are initialised like trunk blocks."""
        n_extra = cfg.n_heads - int(cfg.head1_is_trunk_layer)
        d_ff = cfg.d_ff or 64 * ((4 * cfg.d_model + 63) // 64)
        hf_config = AutoConfig.for_model(
            "llama",
            vocab_size=vocab_size,
            hidden_size=cfg.d_model,
            intermediate_size=d_ff,
            num_hidden_layers=cfg.n_layers + n_extra,  # built together so the extra blocks share HF's init
            num_attention_heads=cfg.n_attn_heads,
            num_key_value_heads=cfg.n_kv_heads or cfg.n_attn_heads,
            max_position_embeddings=cfg.max_seq_len,
            rope_theta=cfg.rope_theta,
            tie_word_embeddings=cfg.tie_embeddings,
            initializer_range=cfg.init_std,
            pad_token_id=pad_id,
            bos_token_id=bos_id,
            eos_token_id=eos_id,
        )
        trunk = AutoModelForCausalLM.from_config(hf_config, attn_implementation="sdpa")
        layers = trunk.get_decoder().layers
        heads = nn.ModuleList(layers[cfg.n_layers :])
        del layers[cfg.n_layers :]
        trunk.config.num_hidden_layers = cfg.n_layers
        return cls(trunk, heads, head1_is_trunk_layer=cfg.head1_is_trunk_layer, head_offsets=cfg.head_offsets)

    @classmethod
    def from_trunk(
        cls, trunk: PreTrainedModel, *, n_heads: int, head1_is_trunk_layer: bool = True,
        head_offsets: Sequence[int] | None = None,
    ) -> MTPModel:
        """Wrap a (pretrained) HF causal LM; new heads start as copies of its last block."""
        base = trunk.get_decoder()
        n_extra = n_heads - int(head1_is_trunk_layer)
        n_layers = len(base.layers)
        heads = nn.ModuleList()
        for i in range(n_extra):
            block = copy.deepcopy(base.layers[-1])
            block.self_attn.layer_idx = n_layers + i  # distinct KV-cache slot per head
            heads.append(block)
        return cls(trunk, heads, head1_is_trunk_layer=head1_is_trunk_layer, head_offsets=head_offsets)

    @classmethod
    def from_pretrained_trunk(
        cls, name_or_path: str, *, n_heads: int, head1_is_trunk_layer: bool = True,
        head_offsets: Sequence[int] | None = None,
    ) -> MTPModel:
        """Load an HF causal LM by local path, `.gguf` file (dequantised to fp32, `wmtp.model.gguf`) or hub name
        (a hub name is the user's request to download)."""
        from wmtp.model.gguf import is_gguf, load_gguf_causal_lm

        if is_gguf(name_or_path):
            trunk = load_gguf_causal_lm(name_or_path)
        else:
            trunk = AutoModelForCausalLM.from_pretrained(name_or_path, attn_implementation="sdpa", dtype=torch.float32)
        return cls.from_trunk(
            trunk, n_heads=n_heads, head1_is_trunk_layer=head1_is_trunk_layer, head_offsets=head_offsets
        )

    # ---- parts --------------------------------------------------------------------------------

    @property
    def decoder(self) -> nn.Module:
        return self.trunk.get_decoder()

    @property
    def unembed(self) -> Tensor:
        """W: [V,D], the (tied) output embedding shared by all heads."""
        return self.trunk.get_output_embeddings().weight

    @property
    def vocab_size(self) -> int:
        return self.unembed.shape[0]

    def head_block(self, k: int) -> nn.Module:
        """The transformer block f_k of head k ∈ {1..H}."""
        if not 1 <= k <= self.n_heads:
            raise IndexError(f"head {k} out of range 1..{self.n_heads}")
        if self.head1_is_trunk_layer:
            return self.decoder.layers[-1] if k == 1 else self.heads[k - 2]
        return self.heads[k - 1]

    def shared_blocks(self) -> list[nn.Module]:
        """Trunk blocks every head builds on (all but the last when the last block is head 1)."""
        layers = list(self.decoder.layers)
        return layers[:-1] if self.head1_is_trunk_layer else layers

    # ---- forward ------------------------------------------------------------------------------

    def trunk_forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, segment_ids: Tensor | None = None
    ) -> tuple[Tensor, TrunkContext]:
        """z: [B,T,D], the shared representation, and the context every head block needs.

        segment_ids (optional Long[B,T]): packed rows, one id per record (padding: -1). Attention is then
        block-diagonal ∧ causal and positions restart at 0 in every record, so each record is computed as if
        it were alone in its row.
        """
        decoder = self.decoder
        x = decoder.embed_tokens(input_ids)
        if segment_ids is not None:
            position_ids, mask = packed_positions_and_mask(segment_ids)
        else:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
            mask = create_causal_mask(
                config=decoder.config,
                inputs_embeds=x,
                attention_mask=None if attention_mask is None else attention_mask.long(),
                cache=None,
                position_ids=position_ids,
            )
        ctx = TrunkContext(mask, decoder.rotary_emb(x, position_ids=position_ids), position_ids, input_ids)
        for block in self.shared_blocks():
            x = self._run_block(block, x, ctx)
        return x, ctx

    def head_hidden(self, k: int, z: Tensor, ctx: TrunkContext) -> Tensor:
        """h_k = norm(f_k(z)): [B,T,D], ready for the shared unembedding."""
        return self.decoder.norm(self._run_block(self.head_block(k), z, ctx))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """All heads' logits [B,T,H,V] ([b,t,k-1] predicts token t + head_offsets[k-1]). Materialises every head's
        logits: for tests and small inputs only; training goes through `wmtp.train.step`, which never holds more
        than a chunk of one head's logits."""
        z, ctx = self.trunk_forward(input_ids, attention_mask)
        return torch.stack(
            [self.head_hidden(k, z, ctx) @ self.unembed.T for k in range(1, self.n_heads + 1)], dim=2
        )

    @staticmethod
    def _run_block(block: nn.Module, x: Tensor, ctx: TrunkContext) -> Tensor:
        return block(
            x, attention_mask=ctx.mask, position_embeddings=ctx.position_embeddings, position_ids=ctx.position_ids
        )

    def n_params(self) -> dict[str, int]:
        """Parameter counts: trunk (incl. embeddings and head 1 when shared) and extra heads."""
        return {
            "trunk": sum(p.numel() for p in self.trunk.parameters()),
            "extra_heads": sum(p.numel() for p in self.heads.parameters()),
            "value_head": 0 if self.value_head is None else sum(p.numel() for p in self.value_head.parameters()),
        }
