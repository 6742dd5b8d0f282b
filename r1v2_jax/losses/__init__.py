"""Loss library: token log-probs, the GRPO policy-loss family (GRPO / GSPO / CISPO / GMPO /
SAPO / Clip-Cov / KL-Cov, all TRL aggregations), rollout corrections, advantage
estimators, DPO / BCO / MPO, SFT, reward-model and DAPO overlong shaping, with registries
by name. Pure, jittable, fp32; see docs/losses.md."""

from r1v2_jax.losses.advantages import (
    dr_grpo_advantages,
    group_advantages,
    grpo_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
)
from r1v2_jax.losses.grpo import (
    KL_ESTIMATORS,
    LOSS_TYPES,
    accumulated_loss,
    grpo_loss,
    grpo_loss_terms,
    grpo_metrics,
    kl_estimate,
)
from r1v2_jax.losses.logprobs import entropy_from_logits, logprobs_from_logits, token_logprobs
from r1v2_jax.losses.mpo import mpo_loss, sequence_logps
from r1v2_jax.losses.overlong import overlong_penalty
from r1v2_jax.losses.preference import (
    BCODeltaState,
    bco_delta_init,
    bco_delta_update,
    bco_pair_loss,
    dpo_loss,
)
from r1v2_jax.losses.preference_objectives import PreferenceInputs
from r1v2_jax.losses.registry import (
    ADVANTAGE_ESTIMATORS,
    POLICY_LOSSES,
    PREFERENCE_OBJECTIVES,
    REWARD_SHAPERS,
    ROLLOUT_CORRECTIONS,
    Registry,
)
from r1v2_jax.losses.reward_model import reward_model_loss
from r1v2_jax.losses.rollout_correction import rollout_correction
from r1v2_jax.losses.token_selection import clip_cov_selection, high_entropy_mask, kl_cov_selection
from r1v2_jax.losses.sft import sft_loss

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "BCODeltaState",
    "KL_ESTIMATORS",
    "LOSS_TYPES",
    "POLICY_LOSSES",
    "PREFERENCE_OBJECTIVES",
    "PreferenceInputs",
    "REWARD_SHAPERS",
    "ROLLOUT_CORRECTIONS",
    "Registry",
    "accumulated_loss",
    "bco_delta_init",
    "bco_delta_update",
    "bco_pair_loss",
    "clip_cov_selection",
    "dpo_loss",
    "dr_grpo_advantages",
    "entropy_from_logits",
    "group_advantages",
    "grpo_advantages",
    "high_entropy_mask",
    "kl_cov_selection",
    "grpo_loss",
    "grpo_loss_terms",
    "grpo_metrics",
    "kl_estimate",
    "logprobs_from_logits",
    "mpo_loss",
    "overlong_penalty",
    "reinforce_pp_advantages",
    "reward_model_loss",
    "rloo_advantages",
    "rollout_correction",
    "sequence_logps",
    "sft_loss",
    "token_logprobs",
]
