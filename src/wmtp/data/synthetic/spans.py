"""Ground truth of token importance: where a mutant differs from the correct completion it was made from.

Spans are `[start, end)` character offsets into a completion; `start == end` marks a point where the other text
has characters this one lacks (a pure deletion, seen from the mutant; a pure insertion, seen from the source).
The difference is `difflib.SequenceMatcher(None, source, mutant, autojunk=False)`: its non-`equal` opcodes, the
mutant-side ranges `[j1, j2)` for the mutant and the source-side ranges `[i1, i2)` for the source.
"""

from __future__ import annotations

from collections.abc import Iterable
from difflib import SequenceMatcher

Span = tuple[int, int]


def diff_spans(source: str, mutant: str) -> tuple[list[Span], list[Span]]:
    """(source-side, mutant-side) ranges of the non-equal opcodes of source → mutant, in order."""
    opcodes = SequenceMatcher(None, source, mutant, autojunk=False).get_opcodes()
    changed = [(i1, i2, j1, j2) for tag, i1, i2, j1, j2 in opcodes if tag != "equal"]
    return [(i1, i2) for i1, i2, _, _ in changed], [(j1, j2) for _, _, j1, j2 in changed]


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """The union of spans, sorted and disjoint: overlapping or touching ranges are joined; a zero-width span is
    kept unless a non-empty range already covers its character (start <= p < end)."""
    spans = list(spans)
    wide = sorted((s, e) for s, e in spans if e > s)
    points = sorted({s for s, e in spans if e == s})
    merged: list[list[int]] = []
    for s, e in wide:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    kept = [(p, p) for p in points if not any(s <= p < e for s, e in merged)]
    return sorted([(s, e) for s, e in merged] + kept)
