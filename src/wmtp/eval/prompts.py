"""Text ↔ tokens at the edges of generation: prompts encoded as training records start, completions cut at
their stop strings. Shared by plain (`wmtp.eval.generate`) and self-speculative (`wmtp.eval.speculative`)
decoding and by log-likelihood scoring."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from wmtp.data.tokenizer import encode_text


def encode_prompt(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of a prompt as training records start (`wmtp.data.tokenizer.encode_text`): [bos] + tokens for
    wmtp's own tokenizer, the tokenizer's own convention for a pretrained one (Llama: bos; SmolLM2, Qwen: none)."""
    return encode_text(tokenizer, text)


def truncate_at_stop(text: str, stops: tuple[str, ...]) -> str:
    """Cut text before the earliest stop string (the stop itself is not part of the completion)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]
