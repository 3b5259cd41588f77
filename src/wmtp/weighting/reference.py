"""The Rho-1 reference model: where it comes from, what identifies it, its tokenizer, and its per-token CE.

A reference is either
    a wmtp run directory (its final model in run/model/) or model directory (wmtp_model.json): scored with
        head 1, i.e. next-token logits (the trunk's own when head 1 is the trunk's last block);
        identity "wmtp:<sha256 of model.safetensors>"
    an HF causal LM, a local directory (config.json): identity "hf-dir:<sha256 of config.json + weight files>",
        or a hub name: identity "hf:<name>@<revision>" (loading it is the user's request to download)
    a `.gguf` file (dequantised, `wmtp.model.gguf`): identity "gguf:<sha256 of the file>"

ref_ce[b,j] = −log p_ref(x_j | x_<j) for every attended token j with an attended predecessor; 0 at j = 0
(no context) and at padding.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from wmtp.data.records import DataError
from wmtp.data.tokenizer import check_same_tokenizer, load_tokenizer
from wmtp.model.checkpoints import META_FILE, MODEL_FILE, load_model_dir
from wmtp.model.gguf import GGUFError, is_gguf, load_gguf_causal_lm
from wmtp.model.loss import linear_ce
from wmtp.model.mtp import SUPPORTED_TRUNKS, MTPModel

HF_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class TokenizerMismatchError(DataError):
    """Policy and reference tokenizers differ; the message names the first difference."""


@dataclass(frozen=True)
class ReferenceSource:
    """Where a reference lives. kind: "wmtp" (model_dir is the wmtp model directory), "hf-dir", "hf" or "gguf"."""

    spec: str
    kind: str
    model_dir: Path | None
    revision: str | None = None


def resolve_reference(spec: str, *, revision: str | None = None) -> ReferenceSource:
    """Classify `spec` (run dir, wmtp model dir, HF directory, `.gguf` file or hub name); errors name the path."""
    path = Path(spec).expanduser()
    if is_gguf(spec):
        if not path.is_file():
            raise DataError(f"reference {spec} does not exist")
        return ReferenceSource(spec, "gguf", None)
    if path.is_dir():
        if (path / META_FILE).is_file():
            return ReferenceSource(spec, "wmtp", path)
        if (path / "model" / META_FILE).is_file():
            return ReferenceSource(spec, "wmtp", path / "model")
        if (path / "config.json").is_file():
            return ReferenceSource(spec, "hf-dir", path)
        if (path / "checkpoints").is_dir():
            raise DataError(f"reference run {path} has no final model ({path / 'model'}); finish training it first")
        raise DataError(f"reference {path} is neither a wmtp run/model directory nor an HF model directory")
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise DataError(f"reference {spec} does not exist")
    return ReferenceSource(spec, "hf", None, revision)


def _sha256_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def reference_identity(source: ReferenceSource) -> str:
    """A string that changes whenever the reference's weights (or, for HF, its config) change."""
    if source.kind == "wmtp":
        return f"wmtp:{_sha256_files([source.model_dir / MODEL_FILE])[:16]}"
    if source.kind == "hf-dir":
        weights = sorted(p for p in source.model_dir.iterdir() if p.suffix in HF_WEIGHT_SUFFIXES and p.is_file())
        if not weights:
            raise DataError(f"reference {source.model_dir} has no weight files ({', '.join(HF_WEIGHT_SUFFIXES)})")
        return f"hf-dir:{_sha256_files([source.model_dir / 'config.json', *weights])[:16]}"
    if source.kind == "gguf":
        return f"gguf:{_sha256_files([Path(source.spec).expanduser()])[:16]}"
    return f"hf:{source.spec}@{source.revision or 'main'}"


def reference_tokenizer(source: ReferenceSource) -> PreTrainedTokenizerFast:
    """The tokenizer saved with the reference (wmtp: model_dir/tokenizer, else the run's tokenizer/)."""
    if source.kind == "wmtp":
        for candidate in (source.model_dir / "tokenizer", source.model_dir.parent / "tokenizer"):
            if (candidate / "tokenizer.json").is_file():
                return load_tokenizer(candidate)
        raise DataError(f"reference {source.spec} has no tokenizer ({source.model_dir / 'tokenizer'}): cannot check it")
    return load_tokenizer(source.spec if source.kind in ("hf", "gguf") else source.model_dir)


def _first_vocab_difference(a: PreTrainedTokenizerFast, b: PreTrainedTokenizerFast) -> str:
    vocab_a, vocab_b = a.get_vocab(), b.get_vocab()
    differing = [t for t in vocab_a.keys() | vocab_b.keys() if vocab_a.get(t) != vocab_b.get(t)]
    if not differing:
        return ""
    token = min(differing, key=lambda t: (min(i for i in (vocab_a.get(t), vocab_b.get(t)) if i is not None), t))
    return f"; first differing id: token {token!r} has id {vocab_a.get(token)} vs {vocab_b.get(token)}"


def check_reference_tokenizer(
    policy: PreTrainedTokenizerFast, reference: PreTrainedTokenizerFast, *, where: str
) -> None:
    """Refuse (TokenizerMismatchError naming the first difference) unless the tokenizers are equal:
    vocab, special tokens, and the ids of a fixed probe text (`wmtp.data.tokenizer.check_same_tokenizer`)."""
    try:
        check_same_tokenizer(policy, reference)
    except ValueError as err:
        detail = _first_vocab_difference(policy, reference) if "vocab size" in str(err) else ""
        raise TokenizerMismatchError(
            f"the reference tokenizer ({where}) is not the policy's: {err}{detail} (policy vs reference)"
        ) from None


# ---- scoring ------------------------------------------------------------------------------------------


class ReferenceScorer(nn.Module):
    """ref_ce of a batch: (input_ids Long[B,T], attention_mask Bool[B,T]) → Float[B,T] (see module docstring).

    Llama-family references go through MTPModel head 1 with the fused chunked CE (no [B,T,V] logits);
    other HF causal LMs through their full logits.
    """

    def __init__(self, model: nn.Module, *, chunk_tokens: int = 1024):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.chunk_tokens = chunk_tokens

    @torch.no_grad()
    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        device = next(self.model.parameters()).device
        ids, attn = input_ids.to(device), attention_mask.to(device).bool()
        B, T = ids.shape
        ref = torch.zeros(B, T, dtype=torch.float32, device=device)
        if T < 2:
            return ref.to(input_ids.device)
        sel = attn[:, 1:] & attn[:, :-1]  # [B,T-1]: token j=t+1 has a context x_≤t
        targets = ids[:, 1:]
        if isinstance(self.model, MTPModel):
            z, ctx = self.model.trunk_forward(ids, attn)
            h = self.model.head_hidden(1, z, ctx)[:, :-1][sel]  # [N,D]
            ce = linear_ce(h, self.model.unembed, targets[sel], chunk_tokens=self.chunk_tokens)
        else:
            logits = self.model(input_ids=ids, attention_mask=attn.long()).logits[:, :-1][sel]  # [N,V]
            ce = F.cross_entropy(logits.float(), targets[sel], reduction="none")
        ref[:, 1:][sel] = ce.float()
        return ref.to(input_ids.device)


def load_reference_model(source: ReferenceSource, *, device: str | torch.device = "cpu") -> nn.Module:
    """The reference as an MTPModel when its architecture allows (fused CE), else a plain HF causal LM.
    Building a model draws its random init: the global RNG is restored after, so the run's draws do not depend
    on whether a reference was loaded."""
    with torch.random.fork_rng(devices=[]):
        return _load_reference_model(source, device)


def _load_reference_model(source: ReferenceSource, device: str | torch.device) -> nn.Module:
    if source.kind == "wmtp":
        return load_model_dir(source.model_dir, device=device)
    if source.kind == "gguf":
        try:
            trunk = load_gguf_causal_lm(source.spec)
        except GGUFError as err:
            raise DataError(f"reference: {err}") from err
    else:
        name = str(source.model_dir) if source.kind == "hf-dir" else source.spec
        kwargs = {"revision": source.revision} if source.kind == "hf" and source.revision else {}
        trunk = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, attn_implementation="sdpa", **kwargs)
    if trunk.config.model_type in SUPPORTED_TRUNKS:
        return MTPModel.from_trunk(trunk, n_heads=1).to(device)
    return trunk.to(device)
