"""Rollout-vs-trainer correction: truncated / masked importance sampling (TIS / MIS) and
rejection sampling of outliers, at token, sequence or geometric level.

The behaviour (rollout) policy's log-probs come with every sample; the trainer's log-probs
of the same tokens under the policy being updated ("old") may differ (other numerics,
replayed / stale samples). With r_t = logp_old - logp_rollout (padding: 0) and n = sum_t m:
    level token:     log rho = r_t                  (per token)
    level sequence:  log rho = sum_t m r_t          (one per sequence, product of ratios)
    level geometric: log rho = sum_t m r_t / n      (one per sequence, geometric mean)
    rho = exp(clip(log rho, -20, 20))               (verl SAFETY_BOUND)
IS weights (is_level):  truncate: w = min(rho, is_threshold)            (TIS, verl rollout_is)
                        mask:     w = rho if rho <= is_threshold else 0 (TRL *_mask modes)
Rejection (rs_level):   keep = lower <= rho <= rs_threshold, lower = rs_threshold_lower or
                        1 / rs_threshold; the loss mask becomes m * keep (verl rollout_rs:
                        rejected tokens leave the loss denominators too).
Weights multiply the policy term only (`grpo_loss_terms(importance_weights=...)`).

Sources: verl `trainer/ppo/rollout_corr_helper.py` (compute_rollout_correction_weights,
compute_rollout_rejection_mask, compute_is_metrics); TRL 1.x
`vllm_importance_sampling_mode` (token_truncate / token_mask / sequence_truncate /
sequence_mask) and `vllm_importance_sampling_cap`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1v2_jax.losses._checks import check_choice, check_ndim, check_shape, check_static_float

LEVELS = ("token", "sequence", "geometric")
IS_MODES = ("truncate", "mask")
SAFETY_BOUND = 20.0


def _log_rho(r, m, level):
    if level == "token":
        return r
    total = jnp.sum(r * m, axis=1, keepdims=True)
    if level == "sequence":
        return total
    return total / jnp.maximum(jnp.sum(m, axis=1, keepdims=True), 1.0)


def _stats(prefix, log_rho, m, threshold, lower):
    """verl compute_is_metrics / compute_rs_metrics (weights before truncation)."""
    valid = m > 0
    tokens = jnp.maximum(jnp.sum(m), 1.0)
    rho = jnp.broadcast_to(jnp.exp(jnp.clip(log_rho, -SAFETY_BOUND, SAFETY_BOUND)), m.shape)
    masked_mean = lambda x: jnp.sum(jnp.where(valid, x, 0.0)) / tokens  # noqa: E731
    out = {f"{prefix}_mean": masked_mean(rho)}
    if log_rho.shape[1] == 1:  # one ratio per sequence: extremes and shares over sequences
        out[f"{prefix}_max"] = jnp.exp(jnp.minimum(jnp.max(log_rho), SAFETY_BOUND))
        out[f"{prefix}_min"] = jnp.exp(jnp.min(log_rho))
        out[f"{prefix}_fraction_high"] = jnp.mean((log_rho > jnp.log(threshold)).astype(jnp.float32))
        out[f"{prefix}_fraction_low"] = jnp.mean((log_rho < jnp.log(lower)).astype(jnp.float32))
    else:
        out[f"{prefix}_max"] = jnp.max(jnp.where(valid, rho, -jnp.inf))
        out[f"{prefix}_min"] = jnp.min(jnp.where(valid, rho, jnp.inf))
        out[f"{prefix}_fraction_high"] = masked_mean((rho > threshold).astype(jnp.float32))
        out[f"{prefix}_fraction_low"] = masked_mean((rho < lower).astype(jnp.float32))
    clamped = jnp.clip(rho, lower, threshold)
    mean_c = masked_mean(clamped)
    # verl writes E[x^2] - E[x]^2; the centred form is the same number without fp32 cancellation
    out[f"{prefix}_std"] = jnp.sqrt(masked_mean(jnp.square(clamped - mean_c)))
    out[f"{prefix}_eff_sample_size"] = 1.0 / masked_mean(jnp.square(clamped / (mean_c + 1e-8)))
    return out


def rollout_correction(
    old_logps: jax.Array,
    rollout_logps: jax.Array,
    mask: jax.Array,
    *,
    is_level: str | None = None,
    is_threshold: float = 2.0,
    is_mode: str = "truncate",
    rs_level: str | None = None,
    rs_threshold: float = 2.0,
    rs_threshold_lower: float | None = None,
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """(is_weights [B, T] fp32 (padding 0; all ones on valid tokens when is_level is None),
    mask [B, T] after rejection, metrics). All inputs are constants (no gradient).

    metrics: rollout_is_{mean,max,min,std,eff_sample_size,fraction_high,fraction_low}
    (weights before truncation; fraction_high is the truncated / masked share),
    rollout_rs_{...same...}, rollout_rs_masked_fraction (tokens), rollout_rs_seq_masked_fraction,
    rollout_kl_k1 = mean(logp_rollout - logp_old), rollout_kl_k3 = mean(e^r - r - 1).
    """
    fn = "rollout_correction"
    for name, level in (("is_level", is_level), ("rs_level", rs_level)):
        if level is not None:
            check_choice(fn, name, level, LEVELS)
    check_choice(fn, "is_mode", is_mode, IS_MODES)
    is_threshold = check_static_float(fn, "is_threshold", is_threshold)
    rs_threshold = check_static_float(fn, "rs_threshold", rs_threshold)
    if is_threshold <= 0 or rs_threshold <= 0:
        raise ValueError(f"{fn}: is_threshold and rs_threshold must be > 0")
    lower = 1.0 / rs_threshold if rs_threshold_lower is None else check_static_float(
        fn, "rs_threshold_lower", rs_threshold_lower)
    if not 0.0 <= lower <= rs_threshold:
        raise ValueError(f"{fn}: need 0 <= rs_threshold_lower <= rs_threshold, got {lower}")
    check_ndim(fn, "old_logps", old_logps, 2)
    check_shape(fn, "rollout_logps", rollout_logps, old_logps.shape)
    check_shape(fn, "mask", mask, old_logps.shape)

    m = mask.astype(jnp.float32)
    valid = m > 0
    r = jnp.where(valid, old_logps.astype(jnp.float32) - rollout_logps.astype(jnp.float32), 0.0)
    r = jax.lax.stop_gradient(r)
    tokens = jnp.maximum(jnp.sum(m), 1.0)
    metrics = {"rollout_kl_k1": jnp.sum(-r * m) / tokens,
               "rollout_kl_k3": jnp.sum((jnp.exp(r) - r - 1.0) * m) / tokens}

    weights = m
    if is_level is not None:
        log_rho = _log_rho(r, m, is_level)
        rho = jnp.exp(jnp.clip(log_rho, -SAFETY_BOUND, SAFETY_BOUND))
        w = jnp.minimum(rho, is_threshold) if is_mode == "truncate" else jnp.where(
            rho > is_threshold, 0.0, rho)
        weights = jnp.broadcast_to(w, m.shape) * m
        metrics.update(_stats("rollout_is", log_rho, m, is_threshold, 1.0 / is_threshold))

    new_mask = m
    if rs_level is not None:
        log_rho = _log_rho(r, m, rs_level)
        rho = jnp.broadcast_to(jnp.exp(jnp.clip(log_rho, -SAFETY_BOUND, SAFETY_BOUND)), m.shape)
        keep = ((rho >= lower) & (rho <= rs_threshold)).astype(jnp.float32)
        new_mask = m * keep
        metrics.update(_stats("rollout_rs", log_rho, m, rs_threshold, lower))
        metrics["rollout_rs_masked_fraction"] = jnp.sum((1.0 - keep) * m) / tokens
        rejected_rows = jnp.sum((1.0 - keep) * m, axis=1) > 0
        metrics["rollout_rs_seq_masked_fraction"] = jnp.mean(rejected_rows.astype(jnp.float32))
    return weights, new_mask, metrics
