"""Loss library: token log-probs, GRPO (all TRL aggregations), advantages, DPO / BCO / MPO,
SFT, reward-model and DAPO overlong shaping. Pure, jittable, fp32; see docs/losses.md."""

from r1v2_jax.losses.advantages import group_advantages
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
from r1v2_jax.losses.reward_model import reward_model_loss
from r1v2_jax.losses.sft import sft_loss

__all__ = [
    "BCODeltaState",
    "KL_ESTIMATORS",
    "LOSS_TYPES",
    "accumulated_loss",
    "bco_delta_init",
    "bco_delta_update",
    "bco_pair_loss",
    "dpo_loss",
    "entropy_from_logits",
    "group_advantages",
    "grpo_loss",
    "grpo_loss_terms",
    "grpo_metrics",
    "kl_estimate",
    "logprobs_from_logits",
    "mpo_loss",
    "overlong_penalty",
    "reward_model_loss",
    "sequence_logps",
    "sft_loss",
    "token_logprobs",
]
