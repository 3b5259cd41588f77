"""Naive reference implementations (explicit loops) shared by the unit tests."""

import torch


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
