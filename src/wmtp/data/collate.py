"""Records → token ids → padded batches (DESIGN §3).

A sequence is [bos] + tok(prompt) + tok(completion) + [eos]. Prompt and completion are tokenised separately,
exactly as at generation time, when the model is given the prompt's tokens and continues from there.
Loss targets are the completion tokens and the eos; never bos, prompt or padding.

Packing (`pack_records`) concatenates several encoded records into one row of at most `max_len` tokens; the
batch then carries `segment_ids`, with which no attention (`MTPModel.trunk_forward`) and no MTP target
(`mtp_targets`) crosses a record boundary, and positions restart in every record. Whatever a weighting's `prepare`
attached per token (`ref_ce`) or per record (`record_weights`) travels with its record into the packed row.

Decisive tokens (the ground truth of `Record.decisive_spans`): completion token i, covering characters [a, b)
of the completion (the tokenizer's offsets), is decisive iff it overlaps a span [s, e) (a < e and s < b); a
zero-width span [p, p) marks the first token ending after p (the one holding character p), or the eos when
p == len(completion) (text was deleted at the very end: ending there is the mistake). Truncation cuts the mask
with the tokens, so a span beyond max_len marks nothing.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerFast

from wmtp.data.records import DataError, Record
from wmtp.data.tokenizer import text_prefix

log = logging.getLogger(__name__)


@dataclass
class EncodedRecord:
    """One tokenised record: `input_ids[:n_prompt]` is bos + prompt, the rest completion (+ eos if it fit).

    `ref_ce` (optional, len(input_ids) floats): a reference model's CE of token j given input_ids[:j]; 0 at j=0.
    `record_weights` (optional): one float per record of the row, in order (one for a plain record): a per-record
    value a weighting's `prepare` attached (e.g. `group`'s row weight); collate spreads it over the record's tokens.
    `segments` (packed rows only): (length, n_prompt) of each record packed into this row, in order; then
    `id` joins the records' ids with "+" and `is_correct` is true iff every packed record is correct.
    `decisive` (len(input_ids) bools, or None when the record has no `decisive_spans`): True at decisive
    completion tokens and eos (module docstring), False on bos and prompt; a packed row has it iff every packed
    record has.
    """

    id: str
    input_ids: list[int]
    n_prompt: int
    is_correct: bool
    ref_ce: list[float] | None = None
    record_weights: list[float] | None = None
    segments: list[tuple[int, int]] | None = None
    decisive: list[bool] | None = None


@dataclass
class Truncation:
    """What `max_len` cut from one set of records: `n_truncated` records kept but shortened, losing
    `n_tokens_dropped` tokens in all; `n_dropped` records dropped (no completion token fit)."""

    n_truncated: int = 0
    n_tokens_dropped: int = 0
    n_dropped: int = 0

    def __add__(self, other: Truncation) -> Truncation:
        return Truncation(self.n_truncated + other.n_truncated, self.n_tokens_dropped + other.n_tokens_dropped,
                          self.n_dropped + other.n_dropped)


def encode_records(
    records: Sequence[Record], tokenizer: PreTrainedTokenizerFast, max_len: int
) -> list[EncodedRecord]:
    """Tokenise records, truncating each to `max_len` tokens from the right (the prompt start is kept).

    Records start as every text does (`wmtp.data.tokenizer.text_prefix`: [bos] for wmtp's own tokenizer, a
    pretrained tokenizer's own convention: Llama bos, SmolLM2/Qwen nothing). Records left with no completion
    token are dropped, and the number dropped is logged.
    """
    return encode_records_counted(records, tokenizer, max_len)[0]


def encode_records_counted(
    records: Sequence[Record], tokenizer: PreTrainedTokenizerFast, max_len: int
) -> tuple[list[EncodedRecord], Truncation]:
    """`encode_records` and the Truncation it made (same records)."""
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no eos token; completions need an end marker")
    if not records:
        return [], Truncation()
    bos = text_prefix(tokenizer)
    # Batch calls run in the Rust backend; special tokens are added here, never by the tokenizer.
    prompts = tokenizer([r.prompt for r in records], add_special_tokens=False)["input_ids"]
    encoded = tokenizer([r.completion for r in records], add_special_tokens=False, return_offsets_mapping=True)
    out = []
    cut = Truncation()
    completions, offset_lists = encoded["input_ids"], encoded["offset_mapping"]
    for record, prompt, completion, offsets in zip(records, prompts, completions, offset_lists):
        n_prompt = len(bos) + len(prompt)
        full = bos + prompt + completion + [tokenizer.eos_token_id]
        ids = full[:max_len]
        if len(ids) > n_prompt:
            decisive = None
            if record.decisive_spans is not None:
                marks = decisive_tokens(offsets, record.decisive_spans)
                decisive = ([False] * n_prompt + marks)[:max_len]
            out.append(EncodedRecord(record.id, ids, n_prompt, record.is_correct, decisive=decisive))
            if len(full) > max_len:
                cut.n_truncated += 1
                cut.n_tokens_dropped += len(full) - max_len
        else:
            cut.n_dropped += 1
    if len(out) < len(records):
        log.warning(
            "dropped %d of %d records whose completion does not fit in max_len=%d",
            len(records) - len(out), len(records), max_len,
        )
    return out, cut


def decisive_tokens(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[bool]:
    """Which of a completion's tokens (character ranges `offsets`), then its eos, are decisive (module
    docstring): len(offsets) + 1 bools. Spans lie within the completion (Record checks it)."""
    marks = [False] * (len(offsets) + 1)
    for start, end in spans:
        if end > start:
            for i, (a, b) in enumerate(offsets):
                if a < end and start < b:
                    marks[i] = True
        else:
            marks[next((i for i, (_, b) in enumerate(offsets) if b > start), len(offsets))] = True
    return marks


def pack_records(records: Sequence[EncodedRecord], max_len: int) -> list[EncodedRecord]:
    """Pack records into rows of at most `max_len` tokens (best-fit decreasing; deterministic).

    Each row is an EncodedRecord with `segments`; ref_ce values are concatenated like the tokens, record_weights
    record by record. Records are
    never split (encode_records already truncated each to max_len). Rows come out longest-first.
    """
    for r in records:
        if r.segments is not None:
            raise ValueError(f"record {r.id!r} is already packed")
        if len(r.input_ids) > max_len:
            raise ValueError(f"record {r.id!r} has {len(r.input_ids)} tokens > max_len={max_len}")
    order = sorted(range(len(records)), key=lambda i: (-len(records[i].input_ids), i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (room left, row index): the best fit is the first with room >= n
    for i in order:
        n = len(records[i].input_ids)
        at = bisect.bisect_left(free, (n, -1))
        if at == len(free):
            rows.append([i])
            room, row = max_len - n, len(rows) - 1
        else:
            room, row = free.pop(at)
            rows[row].append(i)
            room -= n
        bisect.insort(free, (room, row))
    return [_packed_row([records[i] for i in row]) for row in rows]


def _packed_row(parts: Sequence[EncodedRecord]) -> EncodedRecord:
    has_ref = [p.ref_ce is not None for p in parts]
    if any(has_ref) and not all(has_ref):
        raise ValueError("cannot pack records with and without ref_ce together")
    has_weight = [p.record_weights is not None for p in parts]
    if any(has_weight) and not all(has_weight):
        raise ValueError("cannot pack records with and without record_weights together")
    annotated = all(p.decisive is not None for p in parts)
    return EncodedRecord(
        id="+".join(p.id for p in parts),
        input_ids=[t for p in parts for t in p.input_ids],
        n_prompt=parts[0].n_prompt,
        is_correct=all(p.is_correct for p in parts),
        ref_ce=[v for p in parts for v in p.ref_ce] if all(has_ref) else None,
        record_weights=[v for p in parts for v in p.record_weights] if all(has_weight) else None,
        segments=[(len(p.input_ids), p.n_prompt) for p in parts],
        decisive=[d for p in parts for d in p.decisive] if annotated else None,
    )


def collate(examples: Sequence[EncodedRecord], *, pad_id: int, padding_side: str = "right") -> dict:
    """Pad a list of encoded records to the longest, T.

    Returns `input_ids` Long[B,T], `attention_mask` Bool[B,T], `loss_mask` Bool[B,T] (completion tokens and
    eos), `is_correct` Float[B], `ids` list[str]; and `ref_ce` Float[B,T] when the records carry one
    (ref_ce[b,j] sits on token j like input_ids; 0 at padding). Records with and without ref_ce do not mix.
    `record_weight` Float[B,T] when the records carry `record_weights`: on every token of a record (bos and prompt
    too) that record's value, 0 at padding; records with and without them do not mix.
    When a row is packed (`pack_records`), also `segment_ids` Long[B,T]: 0, 1, … per record of the row, -1 at
    padding; loss_mask then covers each record's completion.
    Always `decisive` Bool[B,T] (True at token j of input_ids iff token j is a decisive target: a completion
    token or eos of an annotated record, see the module docstring; False on bos, prompt and padding) and
    `has_spans` Bool[B] (row b's record carries decisive_spans; a packed row iff every record packed in it does;
    decisive is all False in a row without).
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if not examples:
        raise ValueError("cannot collate an empty batch")
    B, T = len(examples), max(len(e.input_ids) for e in examples)
    has_ref = [e.ref_ce is not None for e in examples]
    if any(has_ref) and not all(has_ref):
        missing = [e.id for e, h in zip(examples, has_ref) if not h]
        raise ValueError(f"some records of the batch carry ref_ce and some do not (missing: {missing[:5]})")
    ref_ce = torch.zeros(B, T, dtype=torch.float32) if all(has_ref) else None
    has_weight = [e.record_weights is not None for e in examples]
    if any(has_weight) and not all(has_weight):
        missing = [e.id for e, h in zip(examples, has_weight) if not h]
        raise ValueError(f"some records of the batch carry record_weights and some do not (missing: {missing[:5]})")
    record_weight = torch.zeros(B, T, dtype=torch.float32) if all(has_weight) else None
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(B, T, dtype=torch.bool)
    loss_mask = torch.zeros(B, T, dtype=torch.bool)
    decisive = torch.zeros(B, T, dtype=torch.bool)
    packed = any(e.segments is not None for e in examples)
    segment_ids = torch.full((B, T), -1, dtype=torch.long) if packed else None
    for b, e in enumerate(examples):
        n = len(e.input_ids)
        start = 0 if padding_side == "right" else T - n  # first real token of row b
        input_ids[b, start:start + n] = torch.tensor(e.input_ids, dtype=torch.long)
        attention_mask[b, start:start + n] = True
        segments = e.segments or [(n, e.n_prompt)]
        if sum(length for length, _ in segments) != n:
            raise ValueError(f"record {e.id!r}: segment lengths do not add up to its {n} tokens")
        if record_weight is not None and len(e.record_weights) != len(segments):
            raise ValueError(f"record {e.id!r}: {len(e.record_weights)} record_weights for {len(segments)} records")
        pos = start
        for s, (length, n_prompt) in enumerate(segments):
            loss_mask[b, pos + n_prompt:pos + length] = True
            if segment_ids is not None:
                segment_ids[b, pos:pos + length] = s
            if record_weight is not None:
                record_weight[b, pos:pos + length] = e.record_weights[s]
            pos += length
        if ref_ce is not None:
            if len(e.ref_ce) != n:
                raise ValueError(f"record {e.id!r}: {len(e.ref_ce)} ref_ce values for {n} tokens")
            ref_ce[b, start:start + n] = torch.tensor(e.ref_ce, dtype=torch.float32)
        if e.decisive is not None:
            if len(e.decisive) != n:
                raise ValueError(f"record {e.id!r}: {len(e.decisive)} decisive marks for {n} tokens")
            decisive[b, start:start + n] = torch.tensor(e.decisive, dtype=torch.bool)
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "loss_mask": loss_mask,
        "is_correct": torch.tensor([float(e.is_correct) for e in examples], dtype=torch.float32),
        "ids": [e.id for e in examples],
        "decisive": decisive & loss_mask,
        "has_spans": torch.tensor([e.decisive is not None for e in examples], dtype=torch.bool),
    }
    if ref_ce is not None:
        batch["ref_ce"] = ref_ce
    if record_weight is not None:
        batch["record_weight"] = record_weight
    if segment_ids is not None:
        batch["segment_ids"] = segment_ids
    return batch
