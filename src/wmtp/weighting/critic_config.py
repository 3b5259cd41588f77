"""The critic weighting's options (`weighting.critic.<field>`; wmtp.weighting.critic holds the weighting)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from wmtp.weighting.base import NoOptions


class CriticConfig(NoOptions):
    """Verifiable-critic weighting (DESIGN §7; `wmtp.weighting.critic`): value head, TD/GAE weights, two stages."""

    mode: Literal["abs_td", "exp_adv", "kstep"] = Field(
        "exp_adv",
        description="Weight of (t,k) from target token j=t+o_k (o: model.head_offsets, default o_k=k): exp_adv = "
        "min(exp(Â_j/β), w_max) with Â whitened by running moments (AWR; a token that lowers the chance of success "
        "gets a low weight); abs_td = |δ_j| (the proposal; largest at a bug); kstep = |o_k-step TD error| "
        "(critic_math.kstep_td).",
    )
    gamma: float = Field(1.0, gt=0, le=1, description="Discount γ per token.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE λ (stage-2 advantages and value targets).")
    reward_correct: float = Field(1.0, description="Terminal reward of a correct solution (on its last token).")
    reward_incorrect: float = Field(0.0, description="Terminal reward of an incorrect solution (0 or −1).")
    reward_norm: Literal["none", "zscore"] = Field(
        "zscore", description="zscore: standardise terminal rewards with the training records' mean and std."
    )
    beta: float = Field(2.0, gt=0, description="exp_adv temperature β (1: the EOS targets' share of weight is ≈2× "
                        "their share of entries on the demo, 2: ≈1.3×).")
    w_max: float = Field(20.0, gt=0, description="exp_adv cap on a raw weight.")
    adv_momentum: float = Field(
        0.99, ge=0, lt=1, description="exp_adv: momentum of the running advantage mean/variance."
    )
    value_head: Literal["linear", "mlp", "block"] = Field(
        "block",
        description="Value head on the trunk output z: RMSNorm then linear, a 2-layer MLP, or a causal transformer "
        "block (a copy of the trunk's last block) then linear, which can pool evidence over the prefix.",
    )
    value_features: Literal["none", "surprise"] = Field(
        "surprise",
        description="surprise: V(s_i) also reads, linearly, the running maximum over the completion tokens j ≤ i "
        "of the model's own head-1 surprise −log p(x_j|x_<j) and of its excess over the prediction's entropy "
        "(an unlikely token is where a solution most often breaks); none: z alone.",
    )
    lr: float = Field(1e-3, gt=0, description="Value-head learning rate (stage 2 follows the main schedule's shape).")
    pretrain_epochs: float = Field(0.5, ge=0, description="Stage 1 (critic pre-training) length in epochs.")
    pretrain_target: Literal["mc", "lambda"] = Field(
        "mc", description="Stage-1 value targets: Monte-Carlo returns or λ-returns."
    )
    pretrain_trunk_lr_scale: float = Field(
        0.0, ge=0, description="Stage-1 trunk learning rate as a fraction of optim.lr (0 = trunk frozen)."
    )
    value_coef: float = Field(0.5, ge=0, description="Stage-2 weight of the value loss added to the MTP loss.")
    value_clip: float | None = Field(
        None, gt=0, description="Drift control: clip V within ±value_clip of the stage-1 critic (PPO-style)."
    )
    anchor_coef: float = Field(
        0.1, ge=0, description="Drift control: coefficient of the MSE between V and the frozen stage-1 critic."
    )
    lm_on_incorrect: bool = Field(
        True, description="Incorrect records carry LM loss (with their weights); false: weight 0 on them."
    )
    value_trunk_grad: bool = Field(
        False, description="Stage 2: the value loss back-propagates into the trunk (true) or only into the value "
        "head, on a detached z (false: the trunk learns from the weighted MTP loss alone, as in a uniform run)."
    )
    value_grad_clip: float | None = Field(
        1.0, gt=0, description="Gradient-norm clip of the value head's parameters on their own (they then leave "
        "the global optim.grad_clip); None: they share the global clip."
    )
    require_signal: bool = Field(
        False, description="Stop the run (CriticHasNoSignal) when the stage-1 critic's validation AUC CI does not "
        "exclude 0.5; false: a loud warning and `signal: false` in the last critic_eval row."
    )
