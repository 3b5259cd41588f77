"""The critic's value head: V(s_t) from the trunk output z (DESIGN §5, §7).

    linear:  V = wᵀ·rmsnorm(z) + b
    mlp:     V = w₂ᵀ·gelu(W₁·rmsnorm(z)) + b
    block:   V = wᵀ·rmsnorm(f(z)) + b, f a causal transformer block (a copy of the trunk's last block), so that
             V(s_t) can pool evidence from the whole prefix rather than read one position's features
z: Float[B,T,D] → V: Float[B,T]. Its own norm: z is the un-normalised residual stream.
With n_features > 0 the head also has `features`, a linear map (no bias, zero-initialised) of F scalar features
per position that its user adds to V: V + uᵀ·f, f: Float[B,T,F] (`feature_values`).
"""

from __future__ import annotations

from torch import Tensor, nn

VALUE_HEAD_KINDS = ("linear", "mlp", "block")


class ValueHead(nn.Module):
    def __init__(self, d_model: int, *, kind: str = "mlp", block: nn.Module | None = None, n_features: int = 0):
        super().__init__()
        if kind not in VALUE_HEAD_KINDS:
            raise ValueError(f"value head kind must be one of {VALUE_HEAD_KINDS}, got {kind!r}")
        if (kind == "block") != (block is not None):
            raise ValueError("a value head of kind 'block' needs a transformer block, and only it")
        self.kind, self.d_model = kind, d_model
        self.block = block  # run by MTPModel.values, which holds the attention mask and RoPE tables
        self.norm = nn.RMSNorm(d_model)
        if kind == "mlp":
            self.out: nn.Module = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, 1))
            last = self.out[-1]
        else:
            self.out = last = nn.Linear(d_model, 1)
        nn.init.zeros_(last.weight)  # V ≡ 0 at the start
        self.n_features = n_features
        self.features = nn.Linear(n_features, 1, bias=False) if n_features else None
        if self.features is not None:
            nn.init.zeros_(self.features.weight)

    def forward(self, x: Tensor) -> Tensor:
        """x: Float[B,T,D] (z, or f(z) for a block head) → V: Float[B,T] (fp32)."""
        return self.out(self.norm(x.float())).squeeze(-1)

    def feature_values(self, f: Tensor) -> Tensor:
        """uᵀ·f: Float[B,T,F] → Float[B,T] (fp32)."""
        if self.features is None:
            raise ValueError("this value head reads no features (n_features=0)")
        return self.features(f.float()).squeeze(-1)

    def spec(self) -> dict:
        """What `build_from_meta` needs to rebuild it."""
        return {"kind": self.kind, "d_model": self.d_model, "n_features": self.n_features}
