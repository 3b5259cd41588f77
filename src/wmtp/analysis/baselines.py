"""Reference points for validation CE: a unigram model of the training targets."""

from __future__ import annotations

import math
from collections import Counter

from wmtp.data.collate import EncodedRecord


def target_tokens(record: EncodedRecord) -> list[int]:
    """Tokens that carry loss: the completion (incl. eos), i.e. positions ≥ n_prompt."""
    return record.input_ids[record.n_prompt :]


def unigram_ce(train: list[EncodedRecord], valid: list[EncodedRecord], vocab_size: int) -> float:
    """Mean CE (nats) of the valid target tokens under add-one-smoothed unigram frequencies of the train targets."""
    counts = Counter(t for r in train for t in target_tokens(r))
    total = sum(counts.values()) + vocab_size
    tokens = [t for r in valid for t in target_tokens(r)]
    if not tokens:
        raise ValueError("no valid target tokens to score")
    return -sum(math.log((counts[t] + 1) / total) for t in tokens) / len(tokens)
