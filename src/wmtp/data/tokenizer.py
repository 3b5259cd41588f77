"""Tokenizers: train a byte-level BPE on a corpus, save/load, hash, and check two are the same.

Byte-level BPE with no normalizer: every byte is in the alphabet, so any text (indentation, tabs, trailing
spaces, unicode) round-trips exactly through encode → decode, which code needs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from wmtp.data.records import DataError

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
SPECIAL_ROLES = ("bos_token", "eos_token", "pad_token", "unk_token")
# Backend sections that define the mapping text ↔ ids. `truncation`/`padding` are left out on purpose:
# transformers changes them on the backend whenever it is called with truncation=True, so they are usage state.
_HASHED_SECTIONS = ("added_tokens", "normalizer", "pre_tokenizer", "model", "post_processor", "decoder")
PROBE_TEXT = (
    "def mean(xs: list[float]) -> float:\n"
    '    """Average; 0.0 when empty."""\n'
    "    if not xs:\n\treturn 0.0\n"
    "    return sum(xs) / len(xs)  # Σ/n, naïve ✓\n"
    "print(mean([1, 2, 3]), 'ok', \"done\") {}[]<>!=&|^~@$%\n"
)
PREFIX_PROBE = "a"  # any text: what the tokenizer puts before it by default is its prefix convention
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE with `vocab_size` entries (pad/bos/eos take ids 0/1/2). Deterministic."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        # The full byte alphabet even if the corpus misses some bytes: no text is ever unencodable.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return _wrap(tok)


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    # clean_up_tokenization_spaces=False: transformers' clean-up would rewrite " ." and " ," on decode.
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, clean_up_tokenization_spaces=False
    )


def is_wmtp_tokenizer(tok: PreTrainedTokenizerBase) -> bool:
    """Whether `tok` is one `train_tokenizer` made (wmtp's own pad/bos/eos tokens)."""
    return (tok.pad_token, tok.bos_token, tok.eos_token) == (PAD, BOS, EOS)


def text_prefix(tok: PreTrainedTokenizerBase) -> list[int]:
    """The ids an encoded text starts with. wmtp's own tokenizer: [bos]. A pretrained one: the special tokens it
    puts in front of a text by default (`add_special_tokens=True`): Llama's [bos], nothing for SmolLM2 or Qwen.
    What a tokenizer appends by default (some add eos) is not used: a prompt is continued, a record ends in eos."""
    if is_wmtp_tokenizer(tok):
        return [tok.bos_token_id]
    special = set(tok.all_special_ids)
    return list(itertools.takewhile(special.__contains__, tok(PREFIX_PROBE)["input_ids"]))


def encode_text(tok: PreTrainedTokenizerBase, text: str) -> list[int]:
    """text_prefix + the text's tokens: how every prompt and record starts (generation, speculative decoding,
    log-likelihood scoring and training records, `wmtp.data.collate.encode_records`, share it)."""
    return text_prefix(tok) + tok.encode(text, add_special_tokens=False)


def save_tokenizer(tok: PreTrainedTokenizerFast, directory: str | Path) -> None:
    """Write the tokenizer files (tokenizer.json, tokenizer_config.json) into `directory`."""
    tok.save_pretrained(str(directory))


def load_tokenizer(path_or_name: str | Path) -> PreTrainedTokenizerFast:
    """Load from a local directory or `.gguf` file; a string that is not an existing path is tried as a Hugging
    Face hub name.

    Only a hub name can trigger a download. A path-like string (absolute, ./, ../, ~, or more than one `/`)
    that does not exist is an error, not a hub lookup.
    """
    from wmtp.model.gguf import GGUFError, is_gguf, load_gguf_tokenizer

    if is_gguf(path_or_name):
        try:
            return load_gguf_tokenizer(path_or_name)
        except GGUFError as err:
            raise DataError(f"tokenizer: {err}") from err
    path = Path(path_or_name).expanduser()
    if path.exists():
        if not (path / "tokenizer.json").is_file():
            raise DataError(f"tokenizer directory {path} has no tokenizer.json")
        return PreTrainedTokenizerFast.from_pretrained(str(path))
    name = str(path_or_name)
    if not _HUB_NAME.match(name):
        raise DataError(f"tokenizer directory {name} does not exist")
    try:
        tok = AutoTokenizer.from_pretrained(name)
    except OSError as err:
        raise DataError(
            f"tokenizer {name!r} is not a local directory and could not be loaded from the hub: {err}"
        ) from err
    if not isinstance(tok, PreTrainedTokenizerFast):
        raise DataError(f"tokenizer {name!r} has no fast (tokenizers) implementation")
    return tok


def _special_tokens(tok: PreTrainedTokenizerFast) -> dict[str, tuple[str | None, int | None]]:
    """Role → (token, id) for bos/eos/pad/unk (None when the tokenizer has no such token)."""
    out = {}
    for role in SPECIAL_ROLES:
        token = getattr(tok, role)
        out[role] = (None, None) if token is None else (str(token), tok.convert_tokens_to_ids(str(token)))
    return out


def tokenizer_hash(tok: PreTrainedTokenizerFast) -> str:
    """sha256 (first 16 hex) over the vocab, the backend definition (merges included) and the special tokens."""
    backend = json.loads(tok.backend_tokenizer.to_str())
    content = {
        "vocab": sorted(tok.get_vocab().items()),
        "backend": {key: backend.get(key) for key in _HASHED_SECTIONS},
        "special": _special_tokens(tok),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def check_same_tokenizer(a: PreTrainedTokenizerFast, b: PreTrainedTokenizerFast) -> None:
    """Raise ValueError naming the first difference: vocab size, a special token, a probe-text id, the vocab."""
    if len(a) != len(b):
        raise ValueError(f"tokenizers differ: vocab size {len(a)} vs {len(b)}")
    special_a, special_b = _special_tokens(a), _special_tokens(b)
    for role in SPECIAL_ROLES:
        if special_a[role] != special_b[role]:
            (ta, ia), (tb, ib) = special_a[role], special_b[role]
            raise ValueError(f"tokenizers differ: {role} {ta!r} (id {ia}) vs {tb!r} (id {ib})")
    ids_a = a(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    ids_b = b(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    for i, (x, y) in enumerate(zip(ids_a, ids_b)):
        if x != y:
            raise ValueError(
                f"tokenizers differ on the probe text at token {i}: id {x} ({a.convert_ids_to_tokens(x)!r}) vs "
                f"id {y} ({b.convert_ids_to_tokens(y)!r})"
            )
    if len(ids_a) != len(ids_b):
        raise ValueError(f"tokenizers differ on the probe text: {len(ids_a)} vs {len(ids_b)} tokens")
    vocab_a, vocab_b = a.get_vocab(), b.get_vocab()
    if vocab_a != vocab_b:
        token = min(t for t in vocab_a.keys() | vocab_b.keys() if vocab_a.get(t) != vocab_b.get(t))
        raise ValueError(f"tokenizers differ: token {token!r} has id {vocab_a.get(token)} vs {vocab_b.get(token)}")
