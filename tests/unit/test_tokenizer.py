import pytest
from transformers import PreTrainedTokenizerFast

from wmtp.config import SyntheticDataConfig
from wmtp.data.records import DataError
from wmtp.data.synthetic import generate_problems
from wmtp.data.tokenizer import (
    BOS, EOS, PAD, check_same_tokenizer, load_tokenizer, save_tokenizer, tokenizer_hash, train_tokenizer,
)

CODE = (
    "def f(xs):\n"
    "    total = 0\n"
    "    for x in xs:\n"
    "        if x % 2 == 0:\n"
    "            total += x  \n"
    "\n"
    "\n"
    "\treturn total\r\n"
    "    # naïve ✓ 😀 {}[]\n"
    "        \n"
)


@pytest.fixture(scope="module")
def corpus():
    problems = generate_problems(SyntheticDataConfig(n_problems=20))
    return [p.prompt + c for p in problems for c in p.correct + p.incorrect]


@pytest.fixture(scope="module")
def tok(corpus):
    return train_tokenizer(corpus, 400)


def test_vocab_and_special_tokens(tok):
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert len(tok) == 400
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == (PAD, BOS, EOS)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    # The tokenizer adds no special tokens by itself: the collator does, exactly once.
    assert tok("x = 1")["input_ids"] == tok("x = 1", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("text", [CODE, "", " ", "\n\n", "    return x\n", "a  b\t\tc"])
def test_round_trip_is_exact(tok, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text


def test_learned_merges_cover_indentation(tok):
    assert len(tok("        total += x\n", add_special_tokens=False)["input_ids"]) < 10


def test_training_is_deterministic(corpus, tok):
    assert tokenizer_hash(train_tokenizer(corpus, 400)) == tokenizer_hash(tok)


def test_hash_stable_across_save_load_and_sensitive_to_vocab(tmp_path, corpus, tok):
    save_tokenizer(tok, tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert isinstance(loaded, PreTrainedTokenizerFast)
    assert tokenizer_hash(loaded) == tokenizer_hash(tok)
    assert loaded(CODE)["input_ids"] == tok(CODE)["input_ids"]
    assert tokenizer_hash(train_tokenizer(corpus, 420)) != tokenizer_hash(tok)


def test_check_same_tokenizer_passes_for_equal(tmp_path, tok):
    save_tokenizer(tok, tmp_path / "tok")
    check_same_tokenizer(tok, load_tokenizer(tmp_path / "tok"))


def test_check_same_tokenizer_names_vocab_size(corpus, tok):
    with pytest.raises(ValueError, match="vocab size 400 vs 420"):
        check_same_tokenizer(tok, train_tokenizer(corpus, 420))


def test_check_same_tokenizer_names_first_probe_difference(corpus, tok):
    other = train_tokenizer(list(reversed(corpus))[:20] + ["x" * 50] * 5, 400)
    with pytest.raises(ValueError, match="probe text at token 0"):
        check_same_tokenizer(tok, other)


def test_check_same_tokenizer_names_special_token(tok):
    other = PreTrainedTokenizerFast(
        tokenizer_object=tok.backend_tokenizer, bos_token=BOS, eos_token=PAD, pad_token=PAD,
        clean_up_tokenization_spaces=False,
    )
    with pytest.raises(ValueError, match=r"eos_token '<\|eos\|>' \(id 2\) vs '<\|pad\|>' \(id 0\)"):
        check_same_tokenizer(tok, other)


def test_load_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer("./runs/no/such/tokenizer")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no tokenizer.json"):
        load_tokenizer(tmp_path / "empty")
