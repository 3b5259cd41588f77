"""weighting/group.py: group advantages against a naive per-group loop, row weights that do not depend on the
batching, prepare's statistics per split, and the config checks."""

from __future__ import annotations

import math
import random

import pytest
import torch

from wmtp.config import ConfigError, load_config
from wmtp.data.collate import EncodedRecord, collate, pack_records
from wmtp.data.dataset import PreparedData
from wmtp.data.records import DataError, Record
from wmtp.model.loss import mtp_targets
from wmtp.weighting.base import RunContext, normalize_weights
from wmtp.weighting.controls import ShuffledControl
from wmtp.weighting.group import (
    GroupConfig,
    GroupWeight,
    group_advantages,
    group_weights,
)

H = 3


def naive_advantages(rewards: list[float], groups: list[int], eps: float) -> list[float]:
    """The definition, one group at a time: (r − mean) / (population std + eps); 0 for |g| = 1 or zero spread."""
    out = [0.0] * len(rewards)
    for g in set(groups):
        members = [i for i, x in enumerate(groups) if x == g]
        values = [rewards[i] for i in members]
        if len(values) == 1 or max(values) == min(values):
            continue
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        for i in members:
            out[i] = (rewards[i] - mean) / (std + eps)
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("eps", [0.0, 1e-6, 0.5])
def test_group_advantages_match_a_naive_loop(seed, eps):
    rng = random.Random(seed)
    labels = rng.sample(range(-50, 1000), 12)  # arbitrary, non-contiguous ids
    groups, rewards = [], []
    for g in labels:
        size = rng.choice([1, 1, 2, 3, 5, 8])
        kind = rng.choice(["binary", "constant", "real"])
        for _ in range(size):
            groups.append(g)
            rewards.append({"binary": float(rng.random() < 0.5), "constant": 0.1,
                            "real": rng.uniform(-2, 3)}[kind])
    order = list(range(len(groups)))
    rng.shuffle(order)  # members of a group are not contiguous
    groups, rewards = [groups[i] for i in order], [rewards[i] for i in order]
    got = group_advantages(torch.tensor(rewards, dtype=torch.float64), torch.tensor(groups), eps)
    torch.testing.assert_close(got, torch.tensor(naive_advantages(rewards, groups, eps), dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)


def test_singletons_and_constant_groups_give_exactly_zero():
    rewards = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.3, 0.7, 0.0, 1.0], dtype=torch.float32)
    groups = torch.tensor([4, 4, 4, 9, 2, 2, 7, 7])
    a = group_advantages(rewards, groups)
    assert a.dtype == torch.float32
    assert a[:4].tolist() == [0.0, 0.0, 0.0, 0.0]  # constant 0.1 (whose mean rounds), and a singleton
    # two members one apart: deviations ±0.5, population std 0.5 (an unbiased std, 0.707, would give ±0.707)
    assert a[6:].tolist() == pytest.approx([-0.5 / (0.5 + 1e-6), 0.5 / (0.5 + 1e-6)], rel=1e-7)
    assert group_advantages(torch.zeros(0), torch.zeros(0, dtype=torch.long)).shape == (0,)


@pytest.mark.parametrize(("rewards", "groups", "message"), [
    (torch.zeros(3), torch.zeros(4, dtype=torch.long), "one length"),
    (torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long), "1-D"),
    (torch.zeros(3), torch.zeros(3), "integers"),
    (torch.tensor([0.0, math.nan]), torch.zeros(2, dtype=torch.long), "finite"),
])
def test_group_advantages_refuse_bad_input(rewards, groups, message):
    with pytest.raises(ValueError, match=message):
        group_advantages(rewards, groups)
    with pytest.raises(ValueError, match="eps"):
        group_advantages(torch.zeros(2), torch.zeros(2, dtype=torch.long), eps=-1.0)


def test_transforms():
    a = torch.tensor([-2.0, 0.0, 1.0, 10.0])
    exp = group_weights(a, GroupConfig(transform="exp", beta=2.0, max_weight=5.0))
    torch.testing.assert_close(exp, torch.tensor([math.exp(-1), 1.0, math.exp(0.5), 5.0]))
    assert group_weights(a, GroupConfig(transform="positive")).tolist() == [0.0, 0.0, 1.0, 10.0]


def make_split(prefix: str, n_problems: int, seed: int) -> tuple[list[Record], list[EncodedRecord]]:
    """Records of n problems (1–5 solutions each, some all-correct / all-incorrect) and their encodings."""
    rng = random.Random(seed)
    records, encoded = [], []
    for p in range(n_problems):
        for s in range(rng.randint(1, 5)):
            rid, correct = f"{prefix}{p}-{s}", rng.random() < 0.4
            records.append(Record(id=rid, problem_id=f"{prefix}{p}", prompt="p", completion="c", is_correct=correct,
                                  source="test"))
            length = rng.randint(5, 12)
            ids = [1] + [rng.randint(3, 40) for _ in range(length - 2)] + [2]
            encoded.append(EncodedRecord(rid, ids, rng.randint(1, length - 2), correct))
    return records, encoded


def prepared_run(cfg_overrides: tuple[str, ...] = ()) -> tuple[GroupWeight, RunContext]:
    train, train_encoded = make_split("p", 14, seed=0)
    valid, valid_encoded = make_split("v", 5, seed=1)
    cfg = load_config(None, ["weighting.name=group", "data.train_on=all", f"model.n_heads={H}", *cfg_overrides])
    data = PreparedData(train, valid, [], tokenizer=None, data_dir=None, fingerprint="", tokenizer_hash="")
    run = RunContext(cfg, data, train_encoded, valid_encoded, torch.device("cpu"))
    weight_fn = GroupWeight(cfg.weighting.group)
    weight_fn.prepare(run)
    return weight_fn, run


def expected_row_weights(records: list[Record], cfg: GroupConfig) -> dict[str, float]:
    ids = {p: i for i, p in enumerate(dict.fromkeys(r.problem_id for r in records))}
    adv = naive_advantages([float(r.is_correct) for r in records], [ids[r.problem_id] for r in records], cfg.eps)
    return {r.id: group_weights(torch.tensor([a], dtype=torch.float64), cfg).item() for r, a in zip(records, adv)}


def weights_by_record(weight_fn, batches: list[dict]) -> dict[str, torch.Tensor]:
    """Record id → the weights of its valid entries, read from the batches (packed rows split by segment)."""
    out: dict[str, torch.Tensor] = {}
    for batch in batches:
        _, valid = mtp_targets(batch["input_ids"], batch["loss_mask"], batch["attention_mask"], H,
                               segment_ids=batch.get("segment_ids"))
        w = weight_fn.weights(batch, valid, None, {})
        segments = batch.get("segment_ids", torch.zeros_like(batch["input_ids"]))
        for b, row_id in enumerate(batch["ids"]):
            for s, rid in enumerate(row_id.split("+")):
                at = valid[b] & (segments[b] == s)[:, None]
                out[rid] = w[b][at]
    return out


@pytest.mark.parametrize("transform", ["exp", "positive"])
def test_row_weights_are_the_same_whatever_the_batching(transform):
    weight_fn, run = prepared_run((f"weighting.group.transform={transform}",))
    expected = expected_row_weights(run.data.train, weight_fn.cfg)
    rng = random.Random(3)
    shuffled = rng.sample(run.train, len(run.train))
    layouts = {
        "one at a time": [collate([e], pad_id=0) for e in run.train],
        "four, shuffled": [collate(shuffled[i:i + 4], pad_id=0) for i in range(0, len(shuffled), 4)],
        "left padded": [collate(shuffled[i:i + 3], pad_id=0, padding_side="left") for i in range(0, len(shuffled), 3)],
        "packed": [collate(rows, pad_id=0) for rows in [pack_records(shuffled, 40)]],
    }
    for name, batches in layouts.items():
        got = weights_by_record(weight_fn, batches)
        assert got.keys() == expected.keys(), name
        for rid, w in got.items():
            assert w.numel() > 0 and torch.all(w == torch.tensor(expected[rid], dtype=torch.float32)), (name, rid)
    if transform == "positive":
        assert {0.0} < set(expected.values())  # incorrect and all-agreeing groups weigh 0, some rows more


def test_validation_records_get_the_statistics_of_the_validation_split():
    weight_fn, run = prepared_run()
    expected = expected_row_weights(run.data.valid, weight_fn.cfg)
    assert {e.id: e.record_weights for e in run.valid} == {k: [v] for k, v in expected.items()}
    batch = collate(run.valid, pad_id=0)
    _, valid = mtp_targets(batch["input_ids"], batch["loss_mask"], batch["attention_mask"], H)
    torch.testing.assert_close(weight_fn.validation_weights(batch, valid, None, {}),
                               weight_fn.weights(batch, valid, None, {}))
    meta = run.meta["group"]
    assert meta["train"]["n_records"] == len(run.data.train) and meta["valid"]["n_groups"] == 5


def test_shuffled_control_permutes_group_weights_among_valid_entries():
    weight_fn, run = prepared_run()
    control = ShuffledControl(weight_fn, mode="shuffled", seed=0)
    assert control.train_on == "all" and control.supports_packing
    batch = collate(run.train[:6], pad_id=0)
    _, valid = mtp_targets(batch["input_ids"], batch["loss_mask"], batch["attention_mask"], H)
    base, shuffled = weight_fn.weights(batch, valid, None, {}), control.weights(batch, valid, None, {})
    assert torch.equal(base[valid].sort().values, shuffled[valid].sort().values)
    assert not torch.equal(base, shuffled) and torch.all(shuffled[~valid] == 0)


def test_a_batch_without_record_weights_is_an_error():
    _, run = prepared_run()
    plain = [EncodedRecord(e.id, e.input_ids, e.n_prompt, e.is_correct) for e in run.train[:2]]
    batch = collate(plain, pad_id=0)
    _, valid = mtp_targets(batch["input_ids"], batch["loss_mask"], batch["attention_mask"], H)
    with pytest.raises(RuntimeError, match="record_weight"):
        GroupWeight().weights(batch, valid, None, {})


def test_prepare_refuses_ambiguous_ids():
    weight_fn, run = prepared_run()
    first = next(r for r in run.data.train if r.is_correct)
    clash = first.model_copy(update={"is_correct": False, "problem_id": "other"})
    run.data.train = [*run.data.train, clash]
    with pytest.raises(DataError, match="more than once"):
        weight_fn.prepare(run)


def test_config_checks():
    with pytest.raises(ConfigError, match="data.train_on=all"):
        load_config(None, ["weighting.name=group"])
    with pytest.raises(ConfigError, match="allowed keys are beta, eps, max_weight, transform"):
        load_config(None, ["weighting.name=group", "data.train_on=all", "weighting.group.temperature=2"])
    for bad in ("weighting.group.transform=softmax", "weighting.group.beta=0", "weighting.group.eps=-1"):
        with pytest.raises(ConfigError):
            load_config(None, ["weighting.name=group", "data.train_on=all", bad])
    with pytest.raises(ConfigError, match="data.train_on=all"):
        load_config(None, ["weighting.name=shuffled", "weighting.control_of=group"])
    cfg = load_config(None, ["weighting.name=shuffled", "weighting.control_of=group", "data.train_on=all",
                             "data.pack=true"])
    assert cfg.weighting.control_of == "group"


@pytest.mark.parametrize("method", [["weighting.name=group"],
                                    ["weighting.name=shuffled", "weighting.control_of=group"],
                                    ["weighting.name=hybrid", "weighting.hybrid.of=[group,rho1]"]])
def test_per_position_normalisation_is_refused_it_would_cancel_the_row_weights(method):
    raw = torch.tensor([[[3.0, 3.0, 3.0], [0.2, 0.2, 0.2]]])  # two positions of two records: one weight per row
    valid = torch.ones_like(raw, dtype=torch.bool)
    assert torch.equal(normalize_weights(raw, valid, mode="per_position"), torch.ones_like(raw))  # uniform
    with pytest.raises(ConfigError, match="per_position cancels the group weights"):
        load_config(None, [*method, "data.train_on=all", "weighting.normalize=per_position"])
