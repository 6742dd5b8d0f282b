"""Pairwise preference losses on sequence log-likelihoods: DPO (sigmoid) and BCO pair.

Inputs are per-sequence sums of completion-token log-probs, [B] each, for the policy
(chosen, rejected) and the frozen reference (ref_chosen, ref_rejected).
    Delta_c = chosen - ref_chosen,  Delta_r = rejected - ref_rejected
    DPO:      z = beta * (Delta_c - Delta_r)
              l = -(1 - ls) log sigma(z) - ls log sigma(-z)
    BCO pair: l = -log sigma(beta Delta_c - delta) - log sigma(-(beta Delta_r - delta))
              delta = running mean of x_k = mean(concat(beta Delta_c, beta Delta_r)),
              updated BEFORE use with the current batch (explicit state below).
Reference: TRL 0.21.0 `DPOTrainer.dpo_loss` (loss_type "sigmoid", "bco_pair") and
`trl.trainer.utils.RunningMoments` (TRL 1.x dropped the running delta).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from r1v2_jax.losses._checks import check_ndim, check_shape, check_static_float


class BCODeltaState(NamedTuple):
    """Running mean of the BCO reward shift (TRL RunningMoments.mean / .count).

    A pytree of two fp32 scalars: checkpoint it with the train state.
    """

    mean: jax.Array
    count: jax.Array


def bco_delta_init() -> BCODeltaState:
    """RunningMoments' start: mean 0, count 1e-24 (so the first delta equals the first x)."""
    return BCODeltaState(mean=jnp.zeros((), jnp.float32), count=jnp.full((), 1e-24, jnp.float32))


def bco_delta_update(state: BCODeltaState, x: jax.Array) -> BCODeltaState:
    """One RunningMoments.update with a scalar batch statistic x (count n = 1):
    mean <- mean + (x - mean) * n / (count + n), count <- count + n.

    TRL adds n = number of processes per step; the mean it yields is the same, since every
    step adds the same n (weights n / (k n + n) = 1 / (k + 1)).
    """
    x = jax.lax.stop_gradient(jnp.asarray(x, jnp.float32))
    total = state.count + 1.0
    return BCODeltaState(mean=state.mean + (x - state.mean) / total, count=total)


def _check_pair_inputs(fn, chosen, rejected, ref_chosen, ref_rejected, beta):
    check_ndim(fn, "chosen_logps", chosen, 1)
    for name, x in (("rejected_logps", rejected), ("ref_chosen_logps", ref_chosen),
                    ("ref_rejected_logps", ref_rejected)):
        check_shape(fn, name, x, chosen.shape)
    beta = check_static_float(fn, "beta", beta)
    if beta <= 0.0:
        raise ValueError(f"{fn}: beta must be > 0, got {beta}")
    f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
    return f32(chosen), f32(rejected), jax.lax.stop_gradient(f32(ref_chosen)), \
        jax.lax.stop_gradient(f32(ref_rejected)), beta


def _reward_metrics(chosen_rewards: jax.Array, rejected_rewards: jax.Array) -> dict[str, jax.Array]:
    chosen_rewards = jax.lax.stop_gradient(chosen_rewards)
    rejected_rewards = jax.lax.stop_gradient(rejected_rewards)
    return {
        "rewards_chosen": jnp.mean(chosen_rewards),
        "rewards_rejected": jnp.mean(rejected_rewards),
        "margins": jnp.mean(chosen_rewards - rejected_rewards),
        "accuracy": jnp.mean((chosen_rewards > rejected_rewards).astype(jnp.float32)),
    }


def dpo_loss(
    chosen_logps: jax.Array,
    rejected_logps: jax.Array,
    ref_chosen_logps: jax.Array,
    ref_rejected_logps: jax.Array,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DPO sigmoid loss, mean over pairs (TRL 0.21 loss_type="sigmoid", cDPO smoothing).

    metrics: rewards_chosen = mean beta Delta_c, rewards_rejected, margins, accuracy.
    """
    fn = "dpo_loss"
    chosen, rejected, ref_chosen, ref_rejected, beta = _check_pair_inputs(
        fn, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    ls = check_static_float(fn, "label_smoothing", label_smoothing)
    if not 0.0 <= ls < 0.5:
        raise ValueError(f"{fn}: label_smoothing must be in [0, 0.5), got {ls}")
    z = beta * ((chosen - rejected) - (ref_chosen - ref_rejected))
    losses = -(1.0 - ls) * jax.nn.log_sigmoid(z) - ls * jax.nn.log_sigmoid(-z)
    metrics = _reward_metrics(beta * (chosen - ref_chosen), beta * (rejected - ref_rejected))
    return jnp.mean(losses), metrics


def bco_pair_loss(
    chosen_logps: jax.Array,
    rejected_logps: jax.Array,
    ref_chosen_logps: jax.Array,
    ref_rejected_logps: jax.Array,
    delta_state: BCODeltaState,
    *,
    beta: float = 0.1,
) -> tuple[jax.Array, BCODeltaState, dict[str, jax.Array]]:
    """BCO pair loss, mean over pairs (TRL 0.21 loss_type="bco_pair").

    The running delta is first updated with this batch's mean implicit reward (no
    gradient), then used. Returns (loss, new_delta_state, metrics); metrics as `dpo_loss`
    plus delta (the value used in this loss).
    """
    fn = "bco_pair_loss"
    chosen, rejected, ref_chosen, ref_rejected, beta = _check_pair_inputs(
        fn, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    chosen_rewards = beta * (chosen - ref_chosen)
    rejected_rewards = beta * (rejected - ref_rejected)
    batch_reward = jnp.mean(jnp.concatenate([chosen_rewards, rejected_rewards]))
    new_state = bco_delta_update(delta_state, batch_reward)
    delta = jax.lax.stop_gradient(new_state.mean)
    losses = -jax.nn.log_sigmoid(chosen_rewards - delta) - jax.nn.log_sigmoid(-(rejected_rewards - delta))
    metrics = _reward_metrics(chosen_rewards, rejected_rewards)
    metrics["delta"] = delta
    return jnp.mean(losses), new_state, metrics
