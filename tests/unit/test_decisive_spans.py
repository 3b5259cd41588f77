"""Ground truth of token importance: `Record.decisive_spans` of the embedded task, checked with difflib against
the correct body each mutant came from, and the decisive-token mask through encoding, truncation, packing, the
token cache and collate."""

import json
from difflib import SequenceMatcher

import pytest
import torch

from wmtp.config import SyntheticDataConfig
from wmtp.data.collate import (
    EncodedRecord,
    collate,
    decisive_tokens,
    encode_records,
    pack_records,
)
from wmtp.data.records import Record, fingerprint, read_records, write_records
from wmtp.data.synthetic import Problem, generate_problems, generate_splits
from wmtp.data.synthetic import splits as synthetic_splits
from wmtp.data.token_cache import encode_cached
from wmtp.data.tokenizer import tokenizer_hash, train_tokenizer

SMALL = SyntheticDataConfig(n_problems=20)


@pytest.fixture(scope="module")
def records():
    splits = generate_splits(SMALL)
    return [r for name in ("train", "valid", "test") for r in splits[name]]


@pytest.fixture(scope="module")
def problems():
    return {p.problem_id: p for p in generate_problems(SMALL)}


@pytest.fixture(scope="module")
def tok(records):
    return train_tokenizer((r.prompt + r.completion for r in records), 400)


def _differences(a: str, b: str, side: str) -> tuple[set[int], set[int]]:
    """(characters of `side` ("a" or "b") that difflib marks as differing, points where the other side has text
    this one lacks)."""
    chars, points = set(), set()
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        lo, hi = (i1, i2) if side == "a" else (j1, j2)
        if tag != "equal":
            chars |= set(range(lo, hi))
            if lo == hi:
                points.add(lo)
    return chars, points


def _covered(spans) -> tuple[set[int], set[int]]:
    """(characters covered by the spans, the points of their zero-width spans)."""
    return {c for s, e in spans for c in range(s, e)}, {s for s, e in spans if s == e}


def _source_of(problem: Problem, completion: str) -> str:
    return problem.sources[problem.incorrect.index(completion)]


def test_incorrect_records_cover_exactly_where_they_differ_from_their_source(records, problems):
    incorrect = [r for r in records if not r.is_correct]
    assert len(incorrect) >= 20
    correct_texts = {(r.problem_id, r.completion) for r in records if r.is_correct}
    for r in incorrect:
        p = problems[r.problem_id]
        source = _source_of(p, r.completion)
        assert source in p.correct and (r.problem_id, source) in correct_texts, r.id  # a correct record of the data
        chars, points = _differences(source, r.completion, "b")
        assert chars or points, r.id
        got_chars, got_points = _covered(r.decisive_spans)
        assert got_chars == chars, r.id
        assert got_points == points - chars, r.id  # a zero-width span inside a changed range adds nothing


def test_some_mutant_is_not_of_the_first_correct_body(problems):
    # The source is looked up, not assumed: mutants come from every correct variant.
    assert any(s != p.correct[0] for p in problems.values() for s in p.sources)


def test_correct_records_cover_what_their_incorrect_mutants_changed(records, problems):
    labels = {(r.problem_id, r.completion): r.is_correct for r in records}
    correct = [r for r in records if r.is_correct and r.completion in problems[r.problem_id].correct]
    assert correct and any(r.decisive_spans for r in correct)
    for r in correct:
        p = problems[r.problem_id]
        chars, points = set(), set()
        for mutant, source in zip(p.incorrect, p.sources):
            if source == r.completion and not labels[(r.problem_id, mutant)]:
                c, q = _differences(source, mutant, "a")
                chars |= c
                points |= q
        got_chars, got_points = _covered(r.decisive_spans)
        assert got_chars == chars and got_points == points - chars, r.id
        assert r.decisive_spans == sorted(r.decisive_spans)


def test_labelling_assigns_spans_to_equivalent_mutants_and_unknown_provenance():
    body = "    return x + 1\n"
    equivalent, wrong = "    return 1 + x\n", "    return x + 2\n"
    problem = Problem(problem_id="f-0000", family="arithmetic", difficulty="easy", prompt="def f(x):\n",
                      entry_point="f", tests=["assert f(1) == 2", "assert f(5) == 6"], correct=[body],
                      incorrect=[equivalent, wrong], sources=[body, body])
    got = {r.completion: (r.is_correct, r.decisive_spans) for r in synthetic_splits._label([problem])}
    at = body.index("1")
    assert got == {body: (True, [(at, at + 1)]), equivalent: (True, []), wrong: (False, [(at, at + 1)])}
    unknown = Problem(**{**problem.__dict__, "sources": None})
    assert all(r.decisive_spans is None for r in synthetic_splits._label([unknown]))
    with pytest.raises(ValueError, match="sources"):
        Problem(**{**problem.__dict__, "sources": [body, "    return 0\n"]})


def _token_chars(tok, completion_ids: list[int]) -> list[tuple[int, int]]:
    """Character range of each completion token, by decoding prefixes (the templates are ASCII)."""
    ends = [len(tok.decode(completion_ids[: i + 1])) for i in range(len(completion_ids))]
    return list(zip([0] + ends[:-1], ends))


def _expected_marks(spans, chars: list[tuple[int, int]], length: int) -> list[bool]:
    """Naive rule: a token overlapping a span; for a zero-width span at p, the token holding p, or eos at the end."""
    marks = [any(a < e and s < b for s, e in spans if e > s) or any(a <= s < b for s, e in spans if s == e)
             for a, b in chars]
    return marks + [any(s == e == length for s, e in spans)]


def test_decisive_tokens_are_those_whose_characters_touch_a_span(records, tok):
    encoded = {e.id: e for e in encode_records(records, tok, max_len=512)}
    n_marked = n_unmarked = 0
    for r in records:
        e = encoded[r.id]
        assert r.completion.isascii()
        completion_ids = e.input_ids[e.n_prompt:-1]
        assert tok.decode(completion_ids) == r.completion and e.input_ids[-1] == tok.eos_token_id
        chars = _token_chars(tok, completion_ids)
        assert e.decisive[: e.n_prompt] == [False] * e.n_prompt
        assert e.decisive[e.n_prompt:] == _expected_marks(r.decisive_spans, chars, len(r.completion)), r.id
        n_marked += sum(e.decisive)
        n_unmarked += len(completion_ids) + 1 - sum(e.decisive)
    assert n_marked > 0 and n_unmarked > n_marked


def test_zero_width_spans_mark_the_token_holding_the_point_or_eos_at_the_end():
    offsets = [(0, 4), (4, 10), (10, 12), (12, 13)]  # a 13-character completion
    assert decisive_tokens(offsets, [(4, 4)]) == [False, True, False, False, False]
    assert decisive_tokens(offsets, [(11, 11)]) == [False, False, True, False, False]
    assert decisive_tokens(offsets, [(13, 13)]) == [False, False, False, False, True]
    assert decisive_tokens(offsets, [(3, 5), (12, 13)]) == [True, True, False, True, False]
    assert decisive_tokens(offsets, []) == [False] * 5


def _record(completion: str, spans, i: int = 0) -> Record:
    return Record(id=f"p/x{i}", problem_id="p", prompt="def f(x):\n", completion=completion, is_correct=False,
                  source="test", decisive_spans=spans)


def test_a_deletion_at_the_end_marks_eos_and_truncation_cuts_the_mask(tok):
    completion = "    return x\n"
    [e] = encode_records([_record(completion, [(len(completion), len(completion))])], tok, max_len=512)
    assert e.decisive == [False] * (len(e.input_ids) - 1) + [True]
    full = encode_records([_record(completion, [(4, 10)])], tok, max_len=512)[0]
    assert any(full.decisive)
    for max_len in range(full.n_prompt + 1, len(full.input_ids) + 1):
        [cut] = encode_records([_record(completion, [(4, 10)])], tok, max_len=max_len)
        assert cut.input_ids == full.input_ids[:max_len] and cut.decisive == full.decisive[:max_len]


def test_collate_places_the_mask_on_the_tokens_with_either_padding(records, tok):
    encoded = encode_records(records[:6], tok, max_len=512)
    for side in ("right", "left"):
        batch = collate(encoded, pad_id=tok.pad_token_id, padding_side=side)
        T = batch["input_ids"].shape[1]
        assert batch["decisive"].dtype == torch.bool and batch["has_spans"].tolist() == [True] * 6
        for b, e in enumerate(encoded):
            n = len(e.input_ids)
            start = 0 if side == "right" else T - n
            want = [False] * start + e.decisive + [False] * (T - start - n)
            assert batch["decisive"][b].tolist() == want
        assert not (batch["decisive"] & ~batch["loss_mask"]).any()


def test_packing_carries_the_mask_and_needs_every_record_annotated(records, tok):
    encoded = encode_records(records[:12], tok, max_len=512)
    rows = pack_records(encoded, max_len=512)
    by_id = {e.id: e for e in encoded}
    batch = collate(rows, pad_id=tok.pad_token_id)
    assert batch["has_spans"].all()
    for b, row in enumerate(rows):
        want = [d for i in row.id.split("+") for d in by_id[i].decisive]
        assert batch["decisive"][b, : len(want)].tolist() == want and not batch["decisive"][b, len(want):].any()
    plain = EncodedRecord("plain", encoded[0].input_ids, encoded[0].n_prompt, False)
    [mixed] = pack_records([encoded[1], plain], max_len=1024)
    assert mixed.decisive is None
    assert collate([mixed], pad_id=tok.pad_token_id)["has_spans"].tolist() == [False]


def test_records_without_spans_load_and_collate_unannotated(tmp_path, tok):
    plain = Record(id="u/c0", problem_id="u", prompt="def f(x):\n", completion="    return x\n", is_correct=True,
                   source="user")
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({k: v for k, v in plain.model_dump().items() if k != "decisive_spans"}) + "\n")
    [loaded] = read_records(path)
    assert loaded == plain and loaded.decisive_spans is None
    write_records(path, [plain])
    assert "decisive_spans" not in json.loads(path.read_text())  # unannotated files and fingerprints unchanged
    encoded = encode_records([loaded], tok, max_len=64)
    assert encoded[0].decisive is None
    batch = collate(encoded, pad_id=tok.pad_token_id)
    assert batch["has_spans"].tolist() == [False] and not batch["decisive"].any()


def test_spans_round_trip_through_jsonl_and_change_the_fingerprint(tmp_path):
    records = [_record("    return x + 2\n", [(15, 16)], 0), _record("    return x\n", [(12, 12)], 1),
               _record("    return x\n", [], 2)]
    path = tmp_path / "x.jsonl"
    write_records(path, records)
    assert read_records(path) == records
    assert json.loads(path.read_text().splitlines()[0])["decisive_spans"] == [[15, 16]]
    assert fingerprint(records) != fingerprint([r.model_copy(update={"decisive_spans": None}) for r in records])


@pytest.mark.parametrize("spans", [[(3, 2)], [(0, 20)], [(5, 8), (6, 9)], [(5, 8), (1, 2)], [(-1, 2)]])
def test_spans_outside_the_completion_or_unsorted_are_rejected(spans):
    with pytest.raises(ValueError, match="decisive_spans"):
        _record("    return x\n", spans)


def test_token_cache_keeps_the_mask(records, tok, tmp_path):
    mixed = records[:5] + [records[5].model_copy(update={"decisive_spans": None})]
    fresh = encode_records(mixed, tok, max_len=512)
    h = tokenizer_hash(tok)
    first = encode_cached(mixed, tok, 512, tokenizer_hash=h, cache_dir=tmp_path)[0]
    again = encode_cached(mixed, tok, 512, tokenizer_hash=h, cache_dir=tmp_path)[0]
    assert len(fresh) == 6 and first == again == fresh and fresh[-1].decisive is None and any(any(e.decisive) for e in fresh[:5])
