"""Head offsets: head k ∈ {1..H} at position t predicts token t + offsets[k−1] (leap heads, L-MTP 2025).

The default offsets (1, 2, …, H) are Meta's multi-token prediction (head k predicts t+k). Offsets are positive and
strictly increasing; a model's first offset is 1, so head 1 stays the trunk's next-token head.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence


def default_offsets(n_heads: int) -> tuple[int, ...]:
    """(1, 2, …, n_heads)."""
    return tuple(range(1, n_heads + 1))


def check_offsets(
    offsets: Sequence[int] | None, n_heads: int, *, name: str = "offsets", next_token_head: bool = False
) -> tuple[int, ...]:
    """`offsets` as a tuple (None: the default 1..n_heads), or ValueError naming `name` unless it has n_heads
    positive, strictly increasing integers (and, with next_token_head, starts at 1)."""
    if offsets is None:
        return default_offsets(n_heads)
    try:
        out = tuple(operator.index(o) for o in offsets)  # ints (or integer tensors / numpy ints), never floats
    except TypeError:
        raise ValueError(f"{name}={list(offsets)} must hold integers") from None
    if len(out) != n_heads:
        raise ValueError(f"{name}={list(out)} must have one offset per head ({n_heads} heads)")
    if out[0] < 1 or any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"{name}={list(out)} must be positive and strictly increasing")
    if next_token_head and out[0] != 1:
        raise ValueError(f"{name}={list(out)} must start at 1: head 1 is the trunk's next-token head (t+1)")
    return out


def is_default(offsets: Sequence[int]) -> bool:
    """Whether `offsets` are 1..len(offsets) (Meta's heads)."""
    return tuple(offsets) == default_offsets(len(offsets))
