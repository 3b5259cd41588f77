"""Batched sampling of completions from an MTPModel's head 1 (HF `generate`, KV cache, left padding)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from rich.progress import Progress
from transformers import PreTrainedTokenizerBase

from wmtp.eval.prompts import encode_prompt, truncate_at_stop
from wmtp.eval.speculative import complete
from wmtp.model.mtp import MTPModel

CODE_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert ")


@dataclass(frozen=True)
class SamplingConfig:
    """temperature 0 is greedy decoding; n samples per prompt; completions are cut at the first stop string.
    speculative: self-speculative decoding with the MTP heads (`wmtp.eval.speculative`): greedy, the same tokens
    as greedy decoding in fewer forwards; sampled (temperature > 0), the same distribution as head 1's sampling."""

    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    max_new_tokens: int | None = 128  # None: the benchmark's (Benchmark.sampling); generation needs a number
    stop: tuple[str, ...] = field(default=CODE_STOPS)
    seed: int = 0
    speculative: bool = False


@torch.no_grad()
def generate(
    model: MTPModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    sampling: SamplingConfig,
    batch_size: int = 16,
    progress: bool = True,
) -> list[list[str]]:
    """For each prompt, `sampling.n` completions (text after the prompt, cut at stops and eos).

    Prompts are encoded like training records (`encode_prompt`, the tokenizer's own convention). Decoding uses head 1,
    which is the trunk's own last block, so the trunk's HF `generate` (with its KV cache) decodes exactly head 1.
    """
    if sampling.speculative:
        return _generate_speculative(model, tokenizer, prompts, sampling, batch_size)
    if not model.head1_is_trunk_layer:
        raise ValueError("generation decodes head 1 through the trunk: it needs model.head1_is_trunk_layer=true")
    was_training = model.training
    model.eval()
    device = model.unembed.device
    torch.manual_seed(sampling.seed)
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    results: list[list[str]] = []
    with Progress(disable=not progress) as bar:
        task = bar.add_task("generate", total=len(prompts))
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            width = max(map(len, chunk))
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, seq in enumerate(chunk):  # left padding: every prompt ends where generation starts
                ids[i, width - len(seq) :] = torch.tensor(seq)
                mask[i, width - len(seq) :] = 1
            out = model.trunk.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                do_sample=sampling.temperature > 0,
                temperature=sampling.temperature if sampling.temperature > 0 else None,
                top_p=sampling.top_p if sampling.temperature > 0 else None,
                num_return_sequences=sampling.n,
                max_new_tokens=sampling.max_new_tokens,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
            for i in range(len(chunk)):
                results.append([truncate_at_stop(t, sampling.stop) for t in texts[i * sampling.n : (i + 1) * sampling.n]])
            bar.update(task, advance=len(chunk))
    model.train(was_training)
    return results


def _generate_speculative(model: MTPModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                          sampling: SamplingConfig, batch_size: int) -> list[list[str]]:  # fmt: skip
    """`generate` through self-speculative decoding: greedy completions are computed once and repeated n times;
    sampled ones are n draws per prompt (each prompt repeated n times in the batch)."""
    sampled = sampling.temperature > 0
    reps = sampling.n if sampled else 1
    texts, _ = complete(model, tokenizer, [p for p in prompts for _ in range(reps)], speculative=True,
                        max_new_tokens=sampling.max_new_tokens, batch_size=batch_size,
                        temperature=sampling.temperature, top_p=sampling.top_p, seed=sampling.seed)  # fmt: skip
    cut = [truncate_at_stop(t, sampling.stop) for t in texts]
    return [cut[i * reps : (i + 1) * reps] * (sampling.n // reps) for i in range(len(prompts))]
