"""Naive reference implementations (explicit loops), the tiny model and random records shared by the unit tests."""

import random

import torch

from wmtp.config import ModelConfig
from wmtp.data.collate import EncodedRecord
from wmtp.model.mtp import MTPModel


def records_with_ref_ce(
    n: int, seed: int, *, vocab: int, lengths: tuple[int, int] = (6, 16), ref_max: float = 6.0
) -> list[EncodedRecord]:
    """n correct records of random tokens (BOS 1, ids in [3, vocab), EOS 2), lengths drawn in `lengths` (inclusive),
    a random prompt length and a reference CE per token in [0, ref_max) (0 for the first token)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.randint(*lengths)
        ids = [1] + [rng.randrange(3, vocab) for _ in range(length - 2)] + [2]
        ref = [0.0] + [rng.uniform(0, ref_max) for _ in range(length - 1)]
        out.append(EncodedRecord(f"r{i}", ids, n_prompt=rng.randint(1, length - 3), is_correct=True, ref_ce=ref))
    return out


def naive_normalize(raw, valid, mode, clip_min=None, clip_max=None):
    """Loop version of DESIGN §6 normalisation (then clipping); 0 at invalid entries."""
    B, T, H = valid.shape
    out = torch.zeros(B, T, H)
    if mode == "mean":
        total = sum(float(raw[b, t, k]) for b in range(B) for t in range(T) for k in range(H) if valid[b, t, k])
        n = int(valid.sum())
        for b in range(B):
            for t in range(T):
                for k in range(H):
                    if valid[b, t, k] and total > 0:
                        out[b, t, k] = float(raw[b, t, k]) * n / total
    else:
        for b in range(B):
            for t in range(T):
                ks = [k for k in range(H) if valid[b, t, k]]
                total = sum(float(raw[b, t, k]) for k in ks)
                for k in ks:
                    if total > 0:
                        out[b, t, k] = float(raw[b, t, k]) * len(ks) / total
    for b in range(B):
        for t in range(T):
            for k in range(H):
                if valid[b, t, k]:
                    v = float(out[b, t, k])
                    if clip_min is not None:
                        v = max(v, clip_min)
                    if clip_max is not None:
                        v = min(v, clip_max)
                    out[b, t, k] = v
    return out


def tiny_model(n_heads=3, *, head1=True, d_model=32, n_layers=2, seed=0, init_std=0.1, tie=True, vocab=97):
    """A seeded tiny Llama-style MTPModel (vocab 97; pad 0, bos 1, eos 2) for unit tests."""
    torch.manual_seed(seed)
    cfg = ModelConfig(
        n_heads=n_heads,
        head1_is_trunk_layer=head1,
        d_model=d_model,
        n_layers=n_layers,
        n_attn_heads=4,
        max_seq_len=64,
        init_std=init_std,
        tie_embeddings=tie,
    )
    return MTPModel.from_config(cfg, vocab_size=vocab, pad_id=0, bos_id=1, eos_id=2)


@torch.no_grad()
def evaluate_ce(model, batch, *, chunk_tokens):
    """(ce Float[B,T,H], valid Bool[B,T,H]) of every head on a batch, touching no gradient or state."""
    from wmtp.train.step import batch_targets, heads_ce

    targets, valid = batch_targets(batch, model.n_heads)
    z, ctx = model.trunk_forward(batch["input_ids"], batch["attention_mask"], batch.get("segment_ids"))
    return heads_ce(model, z, ctx, targets, valid, chunk_tokens=chunk_tokens), valid
