"""Text ↔ tokens at the edges of generation: prompts encoded as training records start, completions cut at
their stop strings. Shared by plain (`wmtp.eval.generate`) and self-speculative (`wmtp.eval.speculative`)
decoding and by log-likelihood scoring."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase


def encode_prompt(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of a prompt as training records start: [bos] + tokens (no bos for tokenizers without one)."""
    bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    return bos + tokenizer.encode(text, add_special_tokens=False)


def truncate_at_stop(text: str, stops: tuple[str, ...]) -> str:
    """Cut text before the earliest stop string (the stop itself is not part of the completion)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]
