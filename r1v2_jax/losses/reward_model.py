"""Bradley-Terry reward-model loss (Skywork-VL Reward; TRL `RewardTrainer.compute_loss`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1v2_jax.losses._checks import check_ndim, check_shape, check_static_float


def reward_model_loss(
    scores_chosen: jax.Array,
    scores_rejected: jax.Array,
    *,
    margin: jax.Array | None = None,
    center_rewards_coefficient: float | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """mean_b -log sigma(s+_b - s-_b - margin_b)  [+ c * mean((s+ + s-)^2)].

    scores_*: [B] scalar head outputs; margin: optional [B] required score gap (TRL's
    "margin" column); center_rewards_coefficient: TRL's option pushing scores towards 0.
    metrics: accuracy (share with s+ > s-), margin (mean s+ - s-).
    """
    fn = "reward_model_loss"
    check_ndim(fn, "scores_chosen", scores_chosen, 1)
    check_shape(fn, "scores_rejected", scores_rejected, scores_chosen.shape)
    chosen = scores_chosen.astype(jnp.float32)
    rejected = scores_rejected.astype(jnp.float32)
    gap = chosen - rejected
    logits = gap
    if margin is not None:
        check_shape(fn, "margin", margin, scores_chosen.shape)
        logits = gap - jax.lax.stop_gradient(margin.astype(jnp.float32))
    loss = -jnp.mean(jax.nn.log_sigmoid(logits))
    if center_rewards_coefficient is not None:
        coefficient = check_static_float(fn, "center_rewards_coefficient", center_rewards_coefficient)
        loss = loss + coefficient * jnp.mean(jnp.square(chosen + rejected))
    gap = jax.lax.stop_gradient(gap)
    metrics = {
        "accuracy": jnp.mean((gap > 0).astype(jnp.float32)),
        "margin": jnp.mean(gap),
    }
    return loss, metrics
