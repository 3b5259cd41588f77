"""A pre-allocated key/value cache for decoding: in-place writes, O(1) roll-back, no per-step concatenation.

Every block (trunk blocks and MTP head blocks alike) owns one slot, keyed by its `self_attn.layer_idx`:
keys and values [B, nkv, capacity, hd], allocated on the block's first write. The first `len` positions are
committed. A forward writes its T new positions at [len, len+T) in every block (HF attention calls `update`)
and attends to the view [:len+T]; `commit(n)` then keeps the first n of them, so rejected drafts are dropped
by not committing them (the next forward overwrites their slots).

HF's `StaticCache` returns the whole buffer (attention over `capacity` slots every step, masked); this one
returns the live prefix, so attention costs what the sequence holds.
"""

from __future__ import annotations

from torch import Tensor


class StaticKVCache:
    """Keys/values of a batch of B sequences, up to `capacity` positions, for any number of blocks."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity={capacity} must be ≥ 1")
        self.capacity = capacity
        self.len = 0
        self.keys: dict[int, Tensor] = {}
        self.values: dict[int, Tensor] = {}

    def update(self, k: Tensor, v: Tensor, layer_idx: int, kwargs: dict | None = None) -> tuple[Tensor, Tensor]:
        """Write a forward's new keys/values k, v: [B, nkv, T, hd] for block layer_idx at positions [len, len+T);
        returns the live views [B, nkv, len+T, hd] (the signature HF attention calls)."""
        end = self.len + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache full: {end} positions > capacity {self.capacity}")
        if layer_idx not in self.keys:
            B, nkv, _, hd = k.shape
            self.keys[layer_idx] = k.new_empty(B, nkv, self.capacity, hd)
            self.values[layer_idx] = v.new_empty(B, v.shape[1], self.capacity, v.shape[3])
        kb, vb = self.keys[layer_idx], self.values[layer_idx]
        kb[:, :, self.len : end] = k
        vb[:, :, self.len : end] = v
        return kb[:, :, :end], vb[:, :, :end]

    def commit(self, n: int) -> None:
        """Keep the first n positions written by the last forward."""
        self.len += n

    def select(self, rows: Tensor) -> None:
        """Keep only these batch rows Long[B'] (a copy of the buffers: sequences leaving the batch)."""
        self.keys = {i: t[rows] for i, t in self.keys.items()}
        self.values = {i: t[rows] for i, t in self.values.items()}

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.len

