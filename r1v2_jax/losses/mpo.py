"""Mixed Preference Optimisation loss (InternVL MPO; R1V2 eq. 2-5).

    L = w_p * L_pref + w_q * L_qual + w_g * L_gen,   w = (0.8, 0.2, 1.0), beta = 0.1
    L_pref: DPO sigmoid on Delta_c - Delta_r (with label smoothing)
    L_qual: BCO pair with the running delta (explicit state)
    L_gen:  mean NLL over all chosen completion tokens of the batch
Reference: TRL 0.21.0 `DPOTrainer` with loss_type=["sigmoid", "bco_pair", "sft"] and
loss_weights=[0.8, 0.2, 1.0] (InternVL's MPO recipe); `get_batch_loss_metrics` sums the
weighted per-pair losses, then means over pairs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1v2_jax.losses._checks import check_ndim, check_shape, check_static_float
from r1v2_jax.losses.preference import BCODeltaState, bco_pair_loss, dpo_loss
from r1v2_jax.losses.sft import sft_loss


def sequence_logps(token_logps: jax.Array, mask: jax.Array) -> jax.Array:
    """Sum of completion-token log-probs per sequence, fp32 [B]; padding contributes 0."""
    m = mask.astype(jnp.float32)
    return jnp.sum(jnp.where(m > 0, token_logps.astype(jnp.float32) * m, 0.0), axis=-1)


def mpo_loss(
    policy_chosen_logps_tok: jax.Array,
    chosen_mask: jax.Array,
    policy_rejected_logps_tok: jax.Array,
    rejected_mask: jax.Array,
    ref_chosen_logps: jax.Array,
    ref_rejected_logps: jax.Array,
    delta_state: BCODeltaState,
    *,
    beta: float = 0.1,
    weights: tuple[float, float, float] = (0.8, 0.2, 1.0),
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, BCODeltaState, dict[str, jax.Array]]:
    """MPO loss on a batch of B pairs.

    policy_*_logps_tok [B, T*] are per-token log-probs under the policy with their
    completion masks (chosen and rejected may have different T); ref_* are per-sequence
    sums [B] under the reference. `delta_state` is updated once per call (the BCO term)
    and returned. weights = (w_pref, w_qual, w_gen), Python floats.

    metrics: rewards_chosen / rewards_rejected (mean beta*Delta, unweighted), margins,
    accuracy, delta, loss_pref, loss_qual, loss_gen.
    """
    fn = "mpo_loss"
    check_ndim(fn, "policy_chosen_logps_tok", policy_chosen_logps_tok, 2)
    check_ndim(fn, "policy_rejected_logps_tok", policy_rejected_logps_tok, 2)
    check_shape(fn, "chosen_mask", chosen_mask, policy_chosen_logps_tok.shape)
    check_shape(fn, "rejected_mask", rejected_mask, policy_rejected_logps_tok.shape)
    if policy_rejected_logps_tok.shape[0] != policy_chosen_logps_tok.shape[0]:
        raise ValueError(
            f"{fn}: chosen and rejected batch sizes differ: {policy_chosen_logps_tok.shape[0]} "
            f"vs {policy_rejected_logps_tok.shape[0]}"
        )
    if len(weights) != 3:
        raise ValueError(f"{fn}: weights must be (w_pref, w_qual, w_gen), got {weights!r}")
    w_pref, w_qual, w_gen = (check_static_float(fn, "weights", w) for w in weights)

    chosen = sequence_logps(policy_chosen_logps_tok, chosen_mask)
    rejected = sequence_logps(policy_rejected_logps_tok, rejected_mask)
    loss_pref, metrics = dpo_loss(chosen, rejected, ref_chosen_logps, ref_rejected_logps,
                                  beta=beta, label_smoothing=label_smoothing)
    loss_qual, new_state, bco_metrics = bco_pair_loss(chosen, rejected, ref_chosen_logps,
                                                      ref_rejected_logps, delta_state, beta=beta)
    loss_gen, _ = sft_loss(policy_chosen_logps_tok, chosen_mask)

    loss = w_pref * loss_pref + w_qual * loss_qual + w_gen * loss_gen
    metrics = dict(metrics)
    metrics.update(
        delta=bco_metrics["delta"],
        loss_pref=jax.lax.stop_gradient(loss_pref),
        loss_qual=jax.lax.stop_gradient(loss_qual),
        loss_gen=jax.lax.stop_gradient(loss_gen),
    )
    return loss, new_state, metrics
