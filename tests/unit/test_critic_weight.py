"""CriticWeight: weights per mode against loops, detachment, value loss and drift control, state-free evaluation."""

from __future__ import annotations

import math

import pytest
import torch

from oracles import tiny_model
from wmtp.config import WeightingConfig
from wmtp.model.loss import mtp_targets
from wmtp.train.step import forward_backward
from wmtp.weighting.critic import CriticConfig, CriticEval, CriticWeight, gae


def make_batch(seed: int = 0, B: int = 4, T: int = 12, H: int = 3):
    """Right-padded rows: bos + prompt, then a completion of ≥ 2 tokens; values random."""
    g = torch.Generator().manual_seed(seed)
    attn = torch.zeros(B, T, dtype=torch.bool)
    loss_mask = torch.zeros(B, T, dtype=torch.bool)
    for b in range(B):
        n = int(torch.randint(6, T + 1, (1,), generator=g))
        n_prompt = int(torch.randint(1, n - 2, (1,), generator=g))
        attn[b, :n] = True
        loss_mask[b, n_prompt:n] = True
    ids = torch.randint(3, 90, (B, T), generator=g) * attn
    batch = {
        "input_ids": ids,
        "attention_mask": attn,
        "loss_mask": loss_mask,
        "is_correct": torch.tensor([1.0, 0.0, 1.0, 0.0])[:B],
        "ids": [f"r{b}" for b in range(B)],
        "values": torch.randn(B, T, generator=g),
    }
    _, valid = mtp_targets(ids, loss_mask, attn, H)
    return batch, valid


def naive_delta(batch, gamma, rc=1.0, ri=0.0):
    """δ_j by loops (DESIGN §7) with the terminal reward on the last completion token."""
    v, m = batch["values"], batch["loss_mask"]
    B, T = m.shape
    out = torch.zeros(B, T)
    for b in range(B):
        js = [j for j in range(T) if m[b, j]]
        for j in js:
            last = j == js[-1]
            r = (rc if batch["is_correct"][b] else ri) if last else 0.0
            out[b, j] = r + (0.0 if last else gamma * v[b, j]) - v[b, j - 1]
    return out


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_abs_td_weight_of_t_k_is_abs_delta_of_target_token(gamma):
    batch, valid = make_batch()
    critic = CriticWeight(CriticConfig(mode="abs_td", gamma=gamma, reward_norm="none"), reward_rate=0.5)
    w = critic.weights(batch, valid, None, {"values": batch["values"]})
    delta = naive_delta(batch, gamma)
    B, T, H = valid.shape
    for b in range(B):
        for t in range(T):
            for k in range(H):
                if valid[b, t, k]:
                    assert w[b, t, k].item() == pytest.approx(abs(delta[b, t + k + 1].item()), abs=1e-5)


def test_exp_adv_whitens_with_running_moments_and_caps():
    batch, valid = make_batch(seed=1)
    cfg = CriticConfig(mode="exp_adv", beta=0.5, w_max=3.0, lam=0.9)
    critic = CriticWeight(cfg, reward_rate=0.5)
    w = critic.weights(batch, valid, None, {"values": batch["values"]})
    mask = batch["loss_mask"]
    adv, _ = gae(critic.rewards(batch), batch["values"], mask, cfg.gamma, cfg.lam)
    a = adv[mask].double()
    mean, std = a.mean().item(), math.sqrt(a.var(unbiased=False).item() + 1e-8)  # first update sets the moments
    B, T, H = valid.shape
    for b in range(B):
        for t in range(T):
            for k in range(H):
                if valid[b, t, k]:
                    expected = min(math.exp((adv[b, t + k + 1].item() - mean) / std / 0.5), 3.0)
                    assert w[b, t, k].item() == pytest.approx(expected, rel=1e-4)
    assert critic.moments.count == 1 and critic.moments.mean == pytest.approx(mean)


def test_kstep_mode_and_lm_on_incorrect_switch():
    batch, valid = make_batch(seed=2)
    w = CriticWeight(CriticConfig(mode="kstep", lm_on_incorrect=False), reward_rate=0.5).weights(
        batch, valid, None, {"values": batch["values"]}
    )
    assert torch.all(w[batch["is_correct"] == 0] == 0)
    assert torch.all(w >= 0) and w[valid].gt(0).any()
    delta = naive_delta(batch, 1.0)
    b = 0  # a correct row: head 1's k-step error is the one-step δ of its target
    for t in range(valid.shape[1]):
        if valid[b, t, 0]:
            assert w[b, t, 0].item() == pytest.approx(abs(delta[b, t + 1].item()), abs=1e-5)


def test_zscore_rewards_have_mean_zero_and_unit_std_over_training_records():
    p = 0.4
    critic = CriticWeight(CriticConfig(reward_norm="zscore", reward_incorrect=-1.0), reward_rate=p)
    rc, ri = critic.reward_correct, critic.reward_incorrect
    assert p * rc + (1 - p) * ri == pytest.approx(0.0)
    assert p * rc**2 + (1 - p) * ri**2 == pytest.approx(1.0)
    with pytest.raises(ValueError, match="both correct and incorrect"):
        CriticWeight(CriticConfig(reward_norm="zscore"), reward_rate=1.0)


def test_stage1_mc_value_loss_by_hand():
    # one row: bos, prompt, 3 completion tokens; correct; γ=1 ⇒ every MC target is 1
    batch = {
        "loss_mask": torch.tensor([[False, False, True, True, True, False]]),
        "attention_mask": torch.tensor([[True] * 5 + [False]]),
        "is_correct": torch.tensor([1.0]),
        "ids": ["a"],
    }
    values = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.9, 0.0]], requires_grad=True)
    critic = CriticWeight(CriticConfig(), reward_rate=0.5)
    loss = critic.value_loss(values, batch, stage=1, n_positions=3)
    expected = ((0.2 - 1) ** 2 + (0.3 - 1) ** 2 + (0.4 - 1) ** 2) / 3  # V(s_{j−1}) for j = 2, 3, 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert values.grad[0, 4] == 0 and values.grad[0, 0] == 0  # V(s_last) and V(bos) … only s_1..s_3 train
    assert values.grad[0, 1] != 0


def test_value_clip_stops_drift_toward_the_target_beyond_the_clip():
    batch = {
        "loss_mask": torch.tensor([[False, True, True]]),
        "attention_mask": torch.tensor([[True, True, True]]),
        "is_correct": torch.tensor([1.0]),
        "ids": ["a"],
    }
    critic = CriticWeight(CriticConfig(value_clip=0.1, anchor_coef=0.0, lam=1.0), reward_rate=0.5)
    critic.anchors = {"a": torch.tensor([0.0, 0.0, 0.0])}
    far = torch.tensor([[0.5, 0.5, 0.0]], requires_grad=True)  # 0.5 from the anchor, toward the target 1
    critic.value_loss(far, batch, stage=2, n_positions=2).backward()
    assert torch.all(far.grad == 0)  # the clipped term (0.1 − 1)² dominates and is flat in v
    near = torch.tensor([[0.05, 0.05, 0.0]], requires_grad=True)
    critic.value_loss(near, batch, stage=2, n_positions=2).backward()
    assert torch.all(near.grad[0, :2] < 0)

    critic = CriticWeight(CriticConfig(value_clip=None, anchor_coef=2.0, lam=1.0), reward_rate=0.5)
    critic.anchors = {"a": torch.tensor([0.0, 0.0, 0.0])}
    v = torch.tensor([[0.5, 0.5, 0.0]])
    loss = critic.value_loss(v, batch, stage=2, n_positions=2).item()
    assert loss == pytest.approx(((0.5 - 1) ** 2 + 2.0 * 0.5**2) * 2 / 2)


def test_no_gradient_reaches_the_weights():
    """With value_coef=0 the value head gets no gradient at all: the LM loss does not see through the weights."""
    batch, _ = make_batch(seed=3, H=3)
    del batch["values"]
    for coef, expect_grad in ((0.0, False), (0.5, True)):
        model = tiny_model(n_heads=3)
        critic = CriticWeight(CriticConfig(value_coef=coef, value_head="mlp"), reward_rate=0.5)
        critic.attach(model)
        torch.nn.init.normal_(model.value_head.out[-1].weight)
        _, valid = mtp_targets(batch["input_ids"], batch["loss_mask"], batch["attention_mask"], 3)
        out = forward_backward(
            model, batch, weight_fn=critic, wcfg=WeightingConfig(name="critic"), n_valid_step=int(valid.sum()),
            chunk_tokens=16, n_tokens_step=int(batch["loss_mask"].sum()),
        )
        assert out.weights.grad_fn is None and not out.weights.requires_grad
        grads = [p.grad for p in model.value_head.parameters()]
        has_grad = any(g is not None and g.abs().sum() > 0 for g in grads)
        assert has_grad is expect_grad
        assert model.unembed.grad is not None


def test_evaluation_leaves_running_moments_unchanged():
    batch, valid = make_batch(seed=4)
    critic = CriticWeight(CriticConfig(mode="exp_adv"), reward_rate=0.5)
    critic.weights(batch, valid, None, {"values": batch["values"]})
    before = dict(critic.moments.state_dict())
    acc = CriticEval()
    critic.accumulate_eval(acc, batch["values"], batch)
    result = acc.result()
    assert critic.moments.state_dict() == before
    assert set(result) == {"val_value_loss", "val_explained_var", "val_auc_last", "val_auc_ci_low", "val_auc_ci_high"}


@pytest.mark.parametrize("kind", ["linear", "mlp", "block"])
def test_value_head_saves_and_loads_with_the_model(tmp_path, kind):
    from wmtp.model.checkpoints import load_model_dir, save_model_dir

    model = tiny_model(n_heads=2)
    model.attach_value_head(kind)
    torch.nn.init.normal_(model.value_head.out[-1].weight if kind == "mlp" else model.value_head.out.weight)
    batch, _ = make_batch(seed=5)
    loaded = load_model_dir(save_model_dir(model, tmp_path / "m"))
    assert loaded.value_head is not None and loaded.value_head.kind == kind
    with torch.no_grad():
        z, ctx = model.trunk_forward(batch["input_ids"], batch["attention_mask"])
        z2, ctx2 = loaded.trunk_forward(batch["input_ids"], batch["attention_mask"])
        assert torch.equal(model.values(z, ctx), loaded.values(z2, ctx2))


# ---- the default mode with an oracle critic (issue 15) ------------------------------------------------------------


def oracle_row_batch(critic: CriticWeight, bug: int = 6, T: int = 12, n_prompt: int = 2, H: int = 3):
    """Row 0 incorrect with its bug at token `bug`, row 1 correct; completion tokens n_prompt..T−1. The oracle
    critic's V(s_i) is the expected reward: reward_correct before the bug is emitted, reward_incorrect from it on
    (row 1: reward_correct everywhere)."""
    rc, ri = critic.reward_correct, critic.reward_incorrect
    attn = torch.ones(2, T, dtype=torch.bool)
    loss_mask = torch.zeros(2, T, dtype=torch.bool)
    loss_mask[:, n_prompt:] = True
    values = torch.full((2, T), rc)
    values[0, bug:] = ri
    ids = torch.arange(2 * T).reshape(2, T) % 50 + 3
    batch = {"input_ids": ids, "attention_mask": attn, "loss_mask": loss_mask,
             "is_correct": torch.tensor([0.0, 1.0]), "ids": ["bad", "good"]}
    _, valid = mtp_targets(ids, loss_mask, attn, H)
    return batch, valid, values


def bug_entries(valid: torch.Tensor, bug: int):
    """Per head k (0-based): the valid t of row 0 and the t whose target t+k+1 is the bug."""
    for k in range(valid.shape[-1]):
        ts = [t for t in range(valid.shape[1]) if valid[0, t, k]]
        yield k, ts, bug - (k + 1)


def test_default_weights_give_the_bug_token_the_lowest_weight_of_its_row_under_an_oracle_critic():
    critic = CriticWeight(CriticConfig(), reward_rate=0.5)
    batch, valid, values = oracle_row_batch(critic)
    w = critic.weights(batch, valid, None, {"values": values})
    for k, ts, t_bug in bug_entries(valid, bug=6):
        others = [w[0, t, k].item() for t in ts if t != t_bug]
        assert w[0, t_bug, k].item() < min(others), (k, w[0, :, k])


def test_abs_td_gives_the_bug_token_the_highest_weight_under_an_oracle_critic():
    """Why abs_td is not the default: |δ| is largest where the solution breaks, so with lm_on_incorrect it puts
    the row's weight on imitating the bug (an oracle's head-1 weights are 1 at the bug, 0 elsewhere)."""
    critic = CriticWeight(CriticConfig(mode="abs_td"), reward_rate=0.5)
    batch, valid, values = oracle_row_batch(critic)
    w = critic.weights(batch, valid, None, {"values": values})
    for k, ts, t_bug in bug_entries(valid, bug=6):
        others = [w[0, t, k].item() for t in ts if t != t_bug]
        assert w[0, t_bug, k].item() > max(others), (k, w[0, :, k])


# ---- value loss: λ-return targets are constants ------------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_lambda_return_targets_carry_no_gradient(lam):
    """∂L/∂V(s_{j−1}) = 2(V(s_{j−1}) − G^λ_j)/n with the λ-return G^λ_j held fixed (computed here by loops);
    a target that kept its graph adds the terms of ∂G^λ/∂V and fails (at λ=1 the two coincide)."""
    batch, _ = make_batch(seed=6)
    gamma = 0.9
    critic = CriticWeight(CriticConfig(gamma=gamma, lam=lam, anchor_coef=0.0), reward_rate=0.5)
    values = batch["values"].clone().requires_grad_()
    mask = batch["loss_mask"]
    n = int(mask.sum())
    critic.value_loss(values, batch, stage=2, n_positions=n).backward()
    delta = naive_delta(batch, gamma, critic.reward_correct, critic.reward_incorrect)
    expected = torch.zeros_like(values)
    for b in range(mask.shape[0]):
        js = [j for j in range(mask.shape[1]) if mask[b, j]]
        for j in js:
            advantage = sum((gamma * lam) ** (i - j) * delta[b, i].item() for i in js if i >= j)
            target = batch["values"][b, j - 1].item() + advantage
            expected[b, j - 1] += 2 * (batch["values"][b, j - 1].item() - target) / n
    torch.testing.assert_close(values.grad, expected, atol=1e-5, rtol=0)


# ---- validation weights ------------------------------------------------------------------------------------------


def test_exp_adv_validation_weights_whiten_with_the_current_moments_without_updating_them():
    cfg = CriticConfig(mode="exp_adv", beta=0.5, w_max=3.0, lam=0.9)
    critic = CriticWeight(cfg, reward_rate=0.5)
    first, valid = make_batch(seed=1)
    critic.weights(first, valid, None, {"values": first["values"]})
    batch, valid = make_batch(seed=8)
    moments = critic.moments.state_dict()
    stats = critic.stats()
    got = critic.validation_weights(batch, valid, None, {"values": batch["values"]})
    assert critic.moments.state_dict() == moments and critic.stats() == stats
    adv, _ = gae(critic.rewards(batch), batch["values"], batch["loss_mask"], cfg.gamma, cfg.lam)
    per_token = torch.exp((adv - moments["mean"]) / math.sqrt(moments["var"] + 1e-8) / cfg.beta).clamp(max=cfg.w_max)
    for t in range(valid.shape[1]):
        for k in range(valid.shape[2]):
            sel = valid[:, t, k]
            if not sel.any():
                continue
            torch.testing.assert_close(got[:, t, k][sel], per_token[:, t + k + 1][sel], atol=1e-5, rtol=1e-5)
    trained = critic.weights(batch, valid, None, {"values": batch["values"]})  # updates first: differs
    assert not torch.allclose(trained[valid], got[valid])


# ---- stage-2 gradient paths --------------------------------------------------------------------------------------


@pytest.mark.parametrize("trunk_grad", [False, True])
def test_value_trunk_grad_decides_whether_the_value_loss_reaches_the_trunk(trunk_grad):
    batch, _ = make_batch(seed=9)
    model = tiny_model(n_heads=3)
    critic = CriticWeight(CriticConfig(value_head="linear", value_trunk_grad=trunk_grad), reward_rate=0.5)
    critic.attach(model)
    torch.nn.init.normal_(model.value_head.out.weight)
    torch.nn.init.normal_(model.value_head.features.weight)
    z, ctx = model.trunk_forward(batch["input_ids"], batch["attention_mask"])
    loss, _ = critic.aux_loss(batch, critic.forward(model, z, ctx), n_tokens=int(batch["loss_mask"].sum()))
    loss.backward()
    head_ids = {id(p) for p in model.value_head.parameters()}
    trunk = [p.grad for p in model.parameters() if id(p) not in head_ids]
    reached = any(g is not None and g.abs().sum() > 0 for g in trunk)
    assert reached is trunk_grad
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.value_head.parameters())


# ---- surprise features -------------------------------------------------------------------------------------------


def test_next_token_surprise_matches_full_logits():
    from wmtp.weighting.critic import next_token_surprise

    batch, _ = make_batch(seed=10)
    model = tiny_model(n_heads=2)
    with torch.no_grad():
        z, ctx = model.trunk_forward(batch["input_ids"], batch["attention_mask"])
        logp = torch.log_softmax(model(batch["input_ids"], batch["attention_mask"])[:, :, 0].float(), dim=-1)
        got = next_token_surprise(model, z, ctx, chunk_tokens=8)  # several chunks
    B, T = batch["input_ids"].shape
    for b in range(B):
        assert torch.all(got[b, 0] == 0)
        for j in range(1, T):
            s = -logp[b, j - 1, batch["input_ids"][b, j]]
            entropy = -(logp[b, j - 1].exp() * logp[b, j - 1]).sum()
            torch.testing.assert_close(got[b, j], torch.stack([s, s - entropy]), atol=1e-4, rtol=1e-4)


def test_values_add_the_feature_term_of_the_running_maximum_over_the_completion():
    batch, _ = make_batch(seed=11)
    model = tiny_model(n_heads=2)
    critic = CriticWeight(CriticConfig(value_head="linear"), reward_rate=0.5)
    critic.attach(model)
    torch.nn.init.normal_(model.value_head.features.weight)
    g = torch.Generator().manual_seed(0)
    outputs = {"values": torch.randn(batch["loss_mask"].shape, generator=g),
               "surprise": torch.rand(*batch["loss_mask"].shape, 2, generator=g) * 5}
    got = critic.values(outputs, batch)
    u = model.value_head.features.weight[0].detach()
    mask = batch["loss_mask"]
    for b in range(mask.shape[0]):
        peak = None
        for i in range(mask.shape[1]):
            if mask[b, i]:
                f = outputs["surprise"][b, i]
                peak = f if peak is None else torch.maximum(peak, f)
            extra = 0.0 if peak is None else float(u @ peak)
            assert got[b, i].item() == pytest.approx(outputs["values"][b, i].item() + extra, abs=1e-5)


# ---- localisation of the critic's signals ------------------------------------------------------------------------


def test_critic_localisation_aucs_on_incorrect_annotated_records():
    from test_critic_math import oracle_auc

    batch, _ = make_batch(seed=12)
    g = torch.Generator().manual_seed(1)
    batch["decisive"] = (torch.rand(batch["loss_mask"].shape, generator=g) < 0.3) & batch["loss_mask"]
    batch["has_spans"] = torch.tensor([True, True, True, False])
    critic = CriticWeight(CriticConfig(gamma=0.9, lam=0.8), reward_rate=0.5)
    acc = CriticEval()
    critic.accumulate_eval(acc, batch["values"], batch)
    result = acc.result()
    delta = naive_delta(batch, 0.9, critic.reward_correct, critic.reward_incorrect)
    adv, _ = gae(critic.rewards(batch), batch["values"], batch["loss_mask"], 0.9, 0.8)
    neg_adv, abs_td, labels = [], [], []
    for b in range(4):
        if batch["is_correct"][b] or not batch["has_spans"][b]:  # incorrect annotated rows only: 1
            continue
        for j in range(batch["loss_mask"].shape[1]):
            if batch["loss_mask"][b, j]:
                neg_adv.append(-adv[b, j].item()), abs_td.append(abs(delta[b, j].item()))
                labels.append(bool(batch["decisive"][b, j]))
    assert result["val_loc_auc_neg_adv"] == pytest.approx(oracle_auc(neg_adv, labels))
    assert result["val_loc_auc_abs_td"] == pytest.approx(oracle_auc(abs_td, labels))
    batch["has_spans"] = torch.zeros(4, dtype=torch.bool)
    acc = CriticEval()
    critic.accumulate_eval(acc, batch["values"], batch)
    assert not any(k.startswith("val_loc_") for k in acc.result())  # no annotated record: left out
    del batch["decisive"], batch["has_spans"]
    acc = CriticEval()
    critic.accumulate_eval(acc, batch["values"], batch)
    assert not any(k.startswith("val_loc_") for k in acc.result())  # no ground truth: skipped


def test_a_value_head_with_features_saves_and_loads_with_the_model(tmp_path):
    from wmtp.model.checkpoints import load_model_dir, save_model_dir

    model = tiny_model(n_heads=2)
    CriticWeight(CriticConfig(value_head="linear"), reward_rate=0.5).attach(model)
    torch.nn.init.normal_(model.value_head.features.weight)
    loaded = load_model_dir(save_model_dir(model, tmp_path / "m"))
    assert loaded.value_head.n_features == 2
    assert torch.equal(loaded.value_head.features.weight, model.value_head.features.weight)
