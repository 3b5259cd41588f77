"""Leap heads (`model.head_offsets`): head k at position t predicts token t + o_k. Every place that reads t+k
(targets, rho1's ref_ce, the critic's target token and k-step horizon, localisation, per-head analysis, save/load)
is checked against explicit loops over b, t, k."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from wmtp.analysis.heads import evaluate_heads
from wmtp.config import ConfigError, ModelConfig, load_config
from wmtp.data.collate import EncodedRecord
from wmtp.model.checkpoints import META_FILE, CheckpointError, load_model_dir, save_model_dir
from wmtp.model.loss import mtp_targets
from wmtp.model.meta_checkpoint import load_meta_checkpoint
from wmtp.model.mtp import MTPModel
from wmtp.train.step import batch_targets, check_head1_alignment
from wmtp.weighting.critic import CriticConfig, CriticWeight
from wmtp.weighting.critic_math import kstep_td, last_completion_token, td_errors, terminal_rewards
from wmtp.weighting.localisation import LocalisationAccumulator, at_targets, eos_share
from wmtp.weighting.rho1 import ref_ce_at_targets

from oracles import tiny_model

PAD = 0
OFFSETS = [(1, 2, 4, 8), (1, 3), (1, 2, 4), (1,), (1, 5, 6)]


def naive_targets(ids, loss_mask, attn, offsets, segment_ids=None):
    """The one rule, a loop over b, t, k: valid = (t+o_k < T) & loss_mask[t+o_k] & attn[t] (& same segment)."""
    B, T = ids.shape
    targets = torch.full((B, T, len(offsets)), -100, dtype=torch.long)
    valid = torch.zeros(B, T, len(offsets), dtype=torch.bool)
    for b, t, k in itertools.product(range(B), range(T), range(len(offsets))):
        j = t + offsets[k]
        ok = j < T and bool(loss_mask[b, j]) and bool(attn[b, t])
        if ok and segment_ids is not None:
            ok = bool(segment_ids[b, t] == segment_ids[b, j])
        if ok:
            valid[b, t, k] = True
            targets[b, t, k] = ids[b, j]
    return targets, valid


def padded_batch(seed: int = 0, B: int = 5, T: int = 14):
    """Rows with a prompt (loss_mask False on it) and padding on the right, on the left, on both sides, none."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 60, (B, T), generator=g)
    attn = torch.zeros(B, T, dtype=torch.bool)
    loss = torch.zeros(B, T, dtype=torch.bool)
    for b, (start, prompt, end) in enumerate([(0, 4, T), (0, 3, 9), (3, 2, T), (2, 3, 11), (1, 1, 4)][:B]):
        attn[b, start:end] = True
        loss[b, start + prompt : end] = True
    ids[~attn] = PAD
    return ids, loss, attn


# ---- mtp_targets -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offsets", OFFSETS)
def test_mtp_targets_with_offsets_matches_loop_with_prompts_and_padding(offsets):
    ids, loss, attn = padded_batch()
    targets, valid = mtp_targets(ids, loss, attn, len(offsets), list(offsets))
    exp_t, exp_v = naive_targets(ids, loss, attn, offsets)
    assert torch.equal(valid, exp_v) and torch.equal(targets, exp_t)
    assert valid.any()


@pytest.mark.parametrize("offsets", OFFSETS)
def test_mtp_targets_with_offsets_and_segments_matches_loop(offsets):
    g = torch.Generator().manual_seed(1)
    B, T = 3, 16
    ids = torch.randint(3, 50, (B, T), generator=g)
    loss = torch.rand(B, T, generator=g) < 0.7
    attn = torch.ones(B, T, dtype=torch.bool)
    attn[1, 12:] = False
    seg = torch.tensor([[0] * 6 + [1] * 7 + [2] * 3, [0] * 3 + [1] * 9 + [-1] * 4, [0] * 16])
    targets, valid = mtp_targets(ids, loss, attn, len(offsets), offsets, segment_ids=seg)
    exp_t, exp_v = naive_targets(ids, loss, attn, offsets, seg)
    assert torch.equal(valid, exp_v) and torch.equal(targets, exp_t)


@pytest.mark.parametrize("H", [1, 2, 4, 6])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mtp_targets_none_equals_default_offsets(H, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 40, (3, 9), generator=g)
    loss, attn = torch.rand(3, 9, generator=g) < 0.6, torch.rand(3, 9, generator=g) < 0.8
    seg = torch.randint(0, 3, (3, 9), generator=g).sort(dim=1).values
    for segment_ids in (None, seg):
        plain = mtp_targets(ids, loss, attn, H, segment_ids=segment_ids)
        explicit = mtp_targets(ids, loss, attn, H, list(range(1, H + 1)), segment_ids=segment_ids)
        assert all(torch.equal(a, b) for a, b in zip(plain, explicit))


def test_mtp_targets_offsets_past_the_sequence_give_no_target():
    ids, loss, attn = padded_batch(T=6)
    targets, valid = mtp_targets(ids, loss, attn, 3, [1, 6, 9])
    assert not valid[..., 1:].any() and (targets[..., 1:] == -100).all()
    assert torch.equal(valid[..., 0], mtp_targets(ids, loss, attn, 1)[1][..., 0])


@pytest.mark.parametrize("offsets", [[1, 2], [1, 1, 2], [1, 3, 2], [0, 1, 2], [-1, 1, 2], [1.0, 2.5, 3]])
def test_mtp_targets_bad_offsets_raise(offsets):
    ids, loss, attn = padded_batch(T=6)
    with pytest.raises(ValueError, match="offsets"):
        mtp_targets(ids, loss, attn, 3, offsets)


def test_batch_targets_passes_offsets():
    ids, loss, attn = padded_batch()
    batch = {"input_ids": ids, "loss_mask": loss, "attention_mask": attn}
    got = batch_targets(batch, 3, offsets=(1, 2, 4))
    assert all(torch.equal(a, b) for a, b in zip(got, naive_targets(ids, loss, attn, (1, 2, 4))))


# ---- rho1 --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offsets", [*OFFSETS, None])
def test_ref_ce_at_targets_with_offsets_matches_loop(offsets):
    ref = torch.randn(3, 10, generator=torch.Generator().manual_seed(0))
    H = 3 if offsets is None else len(offsets)
    got = ref_ce_at_targets(ref, H, offsets)
    o = offsets or (1, 2, 3)
    for b, t, k in itertools.product(range(3), range(10), range(H)):
        j = t + o[k]
        assert got[b, t, k] == (ref[b, j] if j < 10 else 0.0), (b, t, k)


# ---- config and model --------------------------------------------------------------------------------------


def test_config_head_offsets():
    cfg = load_config(None, ["model.n_heads=3", "model.head_offsets=[1,2,4]"])
    assert cfg.model.offsets == (1, 2, 4)
    assert load_config(None, ["model.n_heads=3"]).model.offsets == (1, 2, 3)
    assert "head_offsets" not in load_config(None).model_dump()["model"]  # old configs hash the same


@pytest.mark.parametrize(
    ("offsets", "message"),
    [("[1,2]", "one offset per head"), ("[2,3,4]", "must start at 1: head 1 is the trunk's next-token head"),
     ("[1,3,3]", "strictly increasing"), ("[1,4,2]", "strictly increasing"), ("[0,1,2]", "positive")],
)
def test_config_rejects_bad_head_offsets(offsets, message):
    with pytest.raises(ConfigError, match="model.head_offsets") as err:
        load_config(None, ["model.n_heads=3", f"model.head_offsets={offsets}"])
    assert message in str(err.value)


def test_model_rejects_offsets_not_starting_at_one():
    with pytest.raises(ValueError, match="head 1 is the trunk's next-token head"):
        MTPModel.from_trunk(tiny_model(1).trunk, n_heads=2, head_offsets=[2, 3])


def test_model_saves_and_loads_its_offsets(tmp_path):
    cfg = ModelConfig(n_heads=3, head_offsets=[1, 2, 4], d_model=32, n_layers=2, n_attn_heads=4, max_seq_len=64)
    model = MTPModel.from_config(cfg, vocab_size=97, pad_id=0, bos_id=1, eos_id=2)
    assert model.head_offsets == (1, 2, 4)
    save_model_dir(model, tmp_path / "m")
    assert json.loads((tmp_path / "m" / META_FILE).read_text())["head_offsets"] == [1, 2, 4]
    assert load_model_dir(tmp_path / "m").head_offsets == (1, 2, 4)


def test_old_model_files_without_offsets_load_as_default(tmp_path):
    save_model_dir(tiny_model(3), tmp_path / "m")
    meta_path = tmp_path / "m" / META_FILE
    meta = json.loads(meta_path.read_text())
    del meta["head_offsets"]
    meta_path.write_text(json.dumps(meta))
    assert load_model_dir(tmp_path / "m").head_offsets == (1, 2, 3)


def test_init_from_refuses_other_offsets(tmp_path):
    from wmtp.train.run import build_model

    model = MTPModel.from_trunk(tiny_model(1).trunk, n_heads=3, head_offsets=[1, 2, 4])
    save_model_dir(model, tmp_path / "base")
    cfg = load_config(None, [f"model.init_from={tmp_path / 'base'}", "model.n_heads=3"])
    with pytest.raises(ConfigError, match=r"head_offsets=\[1, 2, 4\]; the config asks for 3, True, \[1, 2, 3\]"):
        build_model(cfg, tokenizer=None)


def test_meta_checkpoint_refuses_leap_offsets(tmp_path):
    with pytest.raises(CheckpointError, match="keeps head offsets 1..H"):
        load_meta_checkpoint(tmp_path, n_heads=3, head_offsets=[1, 2, 4])


def test_head1_alignment_holds_with_leap_heads():
    model = MTPModel.from_trunk(tiny_model(1).trunk, n_heads=3, head_offsets=[1, 3, 5])
    ids, loss, attn = padded_batch()
    check_head1_alignment(model, {"input_ids": ids, "loss_mask": loss, "attention_mask": attn})


def test_evaluate_heads_counts_offset_targets():
    model = MTPModel.from_trunk(tiny_model(1).trunk, n_heads=3, head_offsets=[1, 2, 5])
    lengths = (9, 12)
    records = [EncodedRecord(f"r{i}", list(range(3, 3 + n)), n_prompt=2, is_correct=True) for i, n in enumerate(lengths)]
    out = evaluate_heads(model, records, pad_id=PAD)
    # a record of n tokens with a 2-token prompt: head k has targets j = t+o_k in [2, n) with t ≥ 0
    assert [out[f"n_h{k}"] for k in (1, 2, 3)] == [sum(n - max(2, o) for n in lengths) for o in (1, 2, 5)]


# ---- critic ------------------------------------------------------------------------------------------------


def oracle_kstep(rewards, values, mask, gamma, offsets):
    """Loop over b, t, k: target j = t+o_k a completion token; window from s = max(t, c−1) to j (critic_math)."""
    B, T = mask.shape
    out = torch.zeros(B, T, len(offsets), dtype=torch.float64)
    for b, t, k in itertools.product(range(B), range(T), range(len(offsets))):
        j = t + offsets[k]
        if j >= T or not mask[b, j]:
            continue
        first = int(mask[b].long().argmax())
        last = max(i for i in range(T) if mask[b, i])
        s = max(t, first - 1)
        disc = sum(gamma ** (i - s - 1) * float(rewards[b, i]) for i in range(s + 1, j + 1))
        boot = gamma ** (j - s) * float(values[b, j]) if j != last else 0.0
        out[b, t, k] = disc + boot - float(values[b, s])
    return out


def completion_batch(seed: int = 0, T: int = 12):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(5, T, dtype=torch.bool)
    for b, (start, end) in enumerate([(2, 8), (1, 4), (5, 12), (3, 3), (4, 5)]):
        mask[b, start:end] = True
    return torch.randn(5, T, generator=g), torch.randn(5, T, generator=g), mask


@pytest.mark.parametrize("offsets", OFFSETS)
@pytest.mark.parametrize("gamma", [1.0, 0.8])
def test_kstep_td_with_offsets_matches_loop(offsets, gamma):
    rewards, values, mask = completion_batch()
    got = kstep_td(rewards, values, mask, gamma, len(offsets), offsets)
    torch.testing.assert_close(got.double(), oracle_kstep(rewards, values, mask, gamma, offsets), atol=1e-5, rtol=1e-5)


def test_kstep_td_none_equals_default_offsets():
    rewards, values, mask = completion_batch(1)
    assert torch.equal(kstep_td(rewards, values, mask, 0.9, 4), kstep_td(rewards, values, mask, 0.9, 4, [1, 2, 3, 4]))


def critic_batch():
    ids, loss, attn = padded_batch()
    return {"input_ids": ids, "loss_mask": loss, "attention_mask": attn,
            "is_correct": torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])}


@pytest.mark.parametrize("offsets", [(1, 3), (1, 2, 4, 8)])
def test_critic_weights_read_the_offset_target_token(offsets):
    """abs_td: w[t,k] = |δ_{t+o_k}|; kstep: the o_k-step error; the offsets come from the model in attach."""
    batch = critic_batch()
    values = torch.randn(batch["input_ids"].shape, generator=torch.Generator().manual_seed(3))
    model = MTPModel.from_trunk(tiny_model(1).trunk, n_heads=len(offsets), head_offsets=offsets)
    valid = mtp_targets(batch["input_ids"], batch["loss_mask"], batch["attention_mask"], len(offsets), offsets)[1]
    mask = batch["loss_mask"]
    rewards = terminal_rewards(batch["is_correct"], mask)
    for mode in ("abs_td", "kstep"):
        critic = CriticWeight(CriticConfig(mode=mode, reward_norm="none", value_features="none",
                                           value_head="linear"), reward_rate=0.5)
        critic.attach(model)
        w = critic.weights(batch, valid, None, {"values": values})
        if mode == "abs_td":
            delta = td_errors(rewards, values, mask, 1.0).abs()
            expected = torch.zeros(w.shape)
            for b, t, k in itertools.product(range(w.shape[0]), range(w.shape[1]), range(len(offsets))):
                if t + offsets[k] < w.shape[1]:
                    expected[b, t, k] = delta[b, t + offsets[k]]
        else:
            expected = oracle_kstep(rewards, values, mask, 1.0, offsets).abs().float()
        torch.testing.assert_close(w, expected, atol=1e-5, rtol=1e-5)


# ---- localisation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offsets", OFFSETS)
def test_at_targets_with_offsets_matches_loop(offsets):
    token_mask = torch.rand(3, 11, generator=torch.Generator().manual_seed(0)) < 0.4
    got = at_targets(token_mask, len(offsets), offsets)
    for b, t, k in itertools.product(range(3), range(11), range(len(offsets))):
        j = t + offsets[k]
        assert bool(got[b, t, k]) == (j < 11 and bool(token_mask[b, j]))


def test_localisation_and_eos_share_use_offsets():
    """With offsets (1, 3), head 2's entry at t is decisive (or EOS) iff token t+3 is; a weight that marks exactly
    those entries localises perfectly, whereas read as t+2 it would not."""
    ids, loss, attn = padded_batch()
    offsets = (1, 3)
    valid = mtp_targets(ids, loss, attn, 2, offsets)[1]
    decisive = torch.zeros(ids.shape, dtype=torch.bool)
    decisive[:, 7] = True
    positive = at_targets(decisive, 2, offsets)
    weights = torch.where(positive, 5.0, 1.0)
    acc = LocalisationAccumulator(2, offsets)
    acc.add(weights, valid, decisive, torch.ones(5, dtype=torch.bool), torch.zeros(5, dtype=torch.bool))
    result = acc.result()
    assert result["loc_auc_incorrect_h2"] == 1.0 and result["loc_auc_incorrect"] == 1.0
    default = LocalisationAccumulator(2)
    default.add(weights, valid, decisive, torch.ones(5, dtype=torch.bool), torch.zeros(5, dtype=torch.bool))
    assert default.result()["loc_auc_incorrect_h2"] < 1.0

    last = at_targets(last_completion_token(loss), 2, offsets) & valid
    share = eos_share(weights, valid, loss, None, offsets)
    assert share["eos_entry_share"] == pytest.approx(int(last.sum()) / int(valid.sum()))
    assert share["eos_share"] == pytest.approx(float(weights[last].sum() / weights[valid].sum()))


def test_rho1_excess_reads_the_offset_reference_token():
    from wmtp.weighting.rho1 import Rho1Config, Rho1Weight

    offsets = (1, 3)
    ids, loss, attn = padded_batch()
    g = torch.Generator().manual_seed(4)
    batch = {"input_ids": ids, "loss_mask": loss, "attention_mask": attn, "ref_ce": torch.rand(ids.shape, generator=g)}
    valid = mtp_targets(ids, loss, attn, 2, offsets)[1]
    ce = torch.where(valid, torch.rand(valid.shape, generator=g) * 3, 0.0)
    rho1 = Rho1Weight(Rho1Config(excess="signed", min_ce_diff=0.0))
    rho1.attach(MTPModel.from_trunk(tiny_model(1).trunk, n_heads=2, head_offsets=offsets))
    rho1.weights(batch, valid, ce, {})
    for k, o in enumerate(offsets):
        diffs = [float(ce[b, t, k] - batch["ref_ce"][b, t + o]) for b, t in itertools.product(range(5), range(14))
                 if valid[b, t, k]]
        assert rho1.stats()[f"excess_h{k + 1}"] == pytest.approx(sum(diffs) / len(diffs), rel=1e-5)
