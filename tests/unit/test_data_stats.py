"""`wmtp data stats`: counts, correct ratios, per-difficulty counts and token lengths against naive recounts."""

import json
import random

import pytest

from wmtp.config import DataConfig
from wmtp.data.records import Record, write_records
from wmtp.data.stats import data_stats
from wmtp.data.tokenizer import load_tokenizer


@pytest.fixture()
def data_dir(tmp_path):
    rng = random.Random(0)
    splits = {}
    for name, n in (("train", 40), ("valid", 10), ("test", 6)):
        splits[name] = [
            Record(id=f"{name}{i}", problem_id=f"{name}-p{i // 4}", prompt="def f(x):\n" + "    # hint\n" * rng.randint(0, 3),
                   completion="    return x" + " + 1" * rng.randint(0, 40), is_correct=rng.random() < 0.4,
                   source=rng.choice(["a", "b"]), difficulty=rng.choice(["EASY", "HARD", None]))
            for i in range(n)
        ]
        write_records(tmp_path / "data" / f"{name}.jsonl", splits[name])
    return tmp_path / "data", splits


def test_stats_match_naive_counts(data_dir, tmp_path):
    path, splits = data_dir
    cfg = DataConfig(path=str(path), cache_dir=str(tmp_path / "cache"), vocab_size=300, max_len=40)
    stats, out = data_stats(cfg, tmp_path / "stats")
    assert out == tmp_path / "stats"
    assert json.loads((out / "stats.json").read_text()) == stats
    assert (out / "token_lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tok = load_tokenizer(next((tmp_path / "cache").glob("tokenizer-*")))
    for name, records in splits.items():
        s = stats["splits"][name]
        assert s["records"] == len(records)
        assert s["problems"] == len({r.problem_id for r in records})
        assert s["correct"] == sum(1 for r in records if r.is_correct)
        assert s["correct_ratio"] == pytest.approx(s["correct"] / len(records))
        for difficulty in ("EASY", "HARD", None):
            chosen = [r for r in records if r.difficulty == difficulty]
            if chosen:
                entry = s["by_difficulty"][str(difficulty)]
                assert entry["records"] == len(chosen)
                assert entry["correct_ratio"] == pytest.approx(sum(r.is_correct for r in chosen) / len(chosen))
        lengths = [2 + len(tok.encode(r.prompt, add_special_tokens=False))
                   + len(tok.encode(r.completion, add_special_tokens=False)) for r in records]
        assert s["tokens"]["max"] == max(lengths)
        assert s["tokens"]["mean"] == pytest.approx(sum(lengths) / len(lengths))
        assert s["tokens"]["over_max_len"] == pytest.approx(sum(n > 40 for n in lengths) / len(lengths))
    assert 0 < stats["splits"]["train"]["tokens"]["over_max_len"] < 1  # the data straddles max_len
