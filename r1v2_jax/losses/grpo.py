"""GRPO clipped-surrogate loss with KL penalty, every TRL aggregation, exact accumulation.

Per token (rho = exp(logp - logp_old), A = advantage, d = logp_ref - logp):
    l = -min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A)
    dual clip c (A < 0 only):  l = min(l, -c * A)
    truncated-IS weight w:     l = w * l          (policy term only, as TRL/Tunix)
    KL: k1 = -d, k2 = d^2 / 2, k3 = exp(d) - d - 1; bias-corrected: kl = rho * kl
    total: l + beta * kl
Aggregation (TRL 1.x `loss_type`), m = completion mask:
    grpo:    mean_b [ sum_t m l / max(sum_t m, 1) ]
    bnpo:    sum m l / max(sum m, 1)                 (this batch's tokens)
    dr_grpo: sum m l / (B * max_completion_length)
    dapo:    sum m l / num_items_in_batch            (active tokens of the global batch)

Reference: TRL 1.x `GRPOTrainer._compute_loss`; Tunix `rl/algo_core.py` `grpo_loss_fn`
(dual clip `epsilon_c`, `sampler_is_weights`). See docs/losses.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1v2_jax.losses._checks import check_choice, check_ndim, check_shape, check_static_float

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_estimate(logps: jax.Array, ref_logps: jax.Array, estimator: str) -> jax.Array:
    """Per-token estimate of KL(pi_theta || pi_ref) from samples of pi_theta; d = ref - logp."""
    check_choice("kl_estimate", "estimator", estimator, KL_ESTIMATORS)
    return _kl_from_log_ratio(ref_logps - logps, estimator)


def _kl_from_log_ratio(d: jax.Array, estimator: str) -> jax.Array:
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * jnp.square(d)
    return jnp.exp(d) - d - 1.0


def _per_row_or_token(fn: str, name: str, x: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """Accepts [B] (broadcast over tokens) or [B, T]; returns fp32 [B, 1] or [B, T]."""
    if tuple(x.shape) == shape[:1]:
        return x.astype(jnp.float32)[:, None]
    check_shape(fn, name, x, shape)
    return x.astype(jnp.float32)


def _check_options(fn, loss_type, eps_low, eps_high, dual_clip, beta, kl_estimator,
                   kl_bias_correction, max_completion_length, ref_logps):
    check_choice(fn, "loss_type", loss_type, LOSS_TYPES)
    check_choice(fn, "kl_estimator", kl_estimator, KL_ESTIMATORS)
    eps_low = check_static_float(fn, "eps_low", eps_low)
    eps_high = check_static_float(fn, "eps_high", eps_high)
    beta = check_static_float(fn, "beta", beta)
    if not 0.0 <= eps_low < 1.0:
        raise ValueError(f"{fn}: eps_low must be in [0, 1), got {eps_low}")
    if eps_high < 0.0:
        raise ValueError(f"{fn}: eps_high must be >= 0, got {eps_high}")
    if dual_clip is not None and check_static_float(fn, "dual_clip", dual_clip) <= 1.0:
        raise ValueError(f"{fn}: dual_clip must be > 1 (Ye et al. 2020), got {dual_clip}")
    if beta < 0.0:
        raise ValueError(f"{fn}: beta must be >= 0, got {beta}")
    if beta != 0.0 and ref_logps is None:
        raise ValueError(f"{fn}: beta={beta} needs ref_logps (got None)")
    if not isinstance(kl_bias_correction, bool):
        raise ValueError(f"{fn}: kl_bias_correction must be a bool, got {kl_bias_correction!r}")
    if loss_type == "dr_grpo" and (
        isinstance(max_completion_length, bool)
        or not isinstance(max_completion_length, int)
        or max_completion_length < 1
    ):
        raise ValueError(
            f"{fn}: loss_type='dr_grpo' needs max_completion_length as a positive Python int, "
            f"got {max_completion_length!r}"
        )
    return eps_low, eps_high, beta


def grpo_loss_terms(
    logps: jax.Array,
    old_logps: jax.Array | None,
    ref_logps: jax.Array | None,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    loss_type: str = "grpo",
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    kl_bias_correction: bool = False,
    max_completion_length: int | None = None,
    importance_weights: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """(numerator, denominator, metric_sums) of the GRPO loss on one micro-batch.

    Summing numerators and denominators over micro-batches and calling
    `accumulated_loss(sum_num, sum_den)` gives exactly the loss (and, since the
    denominators carry no gradient, the gradient) of the whole batch in one piece:
        grpo:        num = sum_b mean_t(l_b),  den = B   (number of sequences)
        bnpo, dapo:  num = sum m l,            den = sum m (active tokens)
        dr_grpo:     num = sum m l,            den = B * max_completion_length
    metric_sums are sums as well (plus num_tokens / num_sequences); turn the accumulated
    sums into means with `grpo_metrics`.

    logps, old_logps, ref_logps, mask: [B, T]; advantages: [B] (or [B, T]);
    importance_weights: [B] or [B, T] or None. old_logps=None means on-policy
    (old = stop_gradient(logps), rho == 1). old_logps, ref_logps, advantages and
    importance_weights are constants: no gradient flows into them.
    """
    fn = "grpo_loss_terms"
    eps_low, eps_high, beta = _check_options(
        fn, loss_type, eps_low, eps_high, dual_clip, beta, kl_estimator,
        kl_bias_correction, max_completion_length, ref_logps,
    )
    check_ndim(fn, "logps", logps, 2)
    shape = tuple(logps.shape)
    check_shape(fn, "mask", mask, shape)
    for name, x in (("old_logps", old_logps), ("ref_logps", ref_logps)):
        if x is not None:
            check_shape(fn, name, x, shape)

    logps = logps.astype(jnp.float32)
    m = mask.astype(jnp.float32)
    valid = m > 0
    old = logps if old_logps is None else old_logps.astype(jnp.float32)
    old = jax.lax.stop_gradient(old)
    adv = jax.lax.stop_gradient(_per_row_or_token(fn, "advantages", advantages, shape))

    # Padding positions may hold garbage log-probs: zero their log-ratio so exp() cannot
    # overflow into NaN gradients; `where` also gives them exactly zero gradient.
    ratio = jnp.exp(jnp.where(valid, logps - old, 0.0))
    clipped_ratio = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
    per_token = -jnp.minimum(ratio * adv, clipped_ratio * adv)
    if dual_clip is not None:
        per_token = jnp.where(adv < 0, jnp.minimum(per_token, -float(dual_clip) * adv), per_token)
    if importance_weights is not None:
        weights = _per_row_or_token(fn, "importance_weights", importance_weights, shape)
        per_token = per_token * jax.lax.stop_gradient(weights)

    kl = None
    if ref_logps is not None:
        ref = jax.lax.stop_gradient(ref_logps.astype(jnp.float32))
        kl = _kl_from_log_ratio(jnp.where(valid, ref - logps, 0.0), kl_estimator)
        if kl_bias_correction:
            kl = kl * ratio
        if beta != 0.0:
            per_token = per_token + beta * kl

    masked_loss = jnp.where(valid, per_token * m, 0.0)
    batch = shape[0]
    if loss_type == "grpo":
        tokens_per_seq = jnp.maximum(jnp.sum(m, axis=1), 1.0)
        numerator = jnp.sum(jnp.sum(masked_loss, axis=1) / tokens_per_seq)
        denominator = jnp.asarray(batch, jnp.float32)
    elif loss_type == "dr_grpo":
        numerator = jnp.sum(masked_loss)
        denominator = jnp.asarray(batch * max_completion_length, jnp.float32)
    else:  # bnpo, dapo
        numerator = jnp.sum(masked_loss)
        denominator = jnp.sum(m)

    def masked_sum(x: jax.Array) -> jax.Array:
        return jnp.sum(jnp.where(valid, x * m, 0.0))

    is_low = (ratio < 1.0 - eps_low) & (adv < 0)
    is_high = (ratio > 1.0 + eps_high) & (adv > 0)
    sums = {
        "clip_low_sum": masked_sum(is_low.astype(jnp.float32)),
        "clip_high_sum": masked_sum(is_high.astype(jnp.float32)),
        "clip_sum": masked_sum((is_low | is_high).astype(jnp.float32)),
        "ratio_sum": masked_sum(ratio),
        "neg_logp_sum": masked_sum(-logps),
        "num_tokens": jnp.sum(m),
        "num_sequences": jnp.asarray(batch, jnp.float32),
    }
    if dual_clip is not None:
        # Tunix pg_clipfrac_lower: the cap -c*A is below the clipped loss -A*max(rho, clip(rho)).
        is_dual = (adv < 0) & (jnp.maximum(ratio, clipped_ratio) > float(dual_clip))
        sums["dual_clip_sum"] = masked_sum(is_dual.astype(jnp.float32))
    if kl is not None:
        sums["kl_sum"] = masked_sum(kl)
    return numerator, denominator, jax.lax.stop_gradient(sums)


def accumulated_loss(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """Loss from (summed) terms: numerator / max(denominator, 1), the TRL clamp."""
    return numerator / jnp.maximum(denominator, 1.0)


def grpo_metrics(sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Token-weighted means from (summed) metric sums of `grpo_loss_terms`.

    clip_frac_low: share of tokens with A < 0 and rho < 1 - eps_low; clip_frac_high: A > 0
    and rho > 1 + eps_high; clip_frac: either (TRL clip_ratio/low, /high, /region);
    ratio_mean; kl (the per-token estimator actually penalised, incl. bias correction);
    entropy_proxy = -mean logp; dual_clip_frac when dual clip is on; num_tokens.
    """
    tokens = jnp.maximum(sums["num_tokens"], 1.0)
    out = {
        "clip_frac_low": sums["clip_low_sum"] / tokens,
        "clip_frac_high": sums["clip_high_sum"] / tokens,
        "clip_frac": sums["clip_sum"] / tokens,
        "ratio_mean": sums["ratio_sum"] / tokens,
        "entropy_proxy": sums["neg_logp_sum"] / tokens,
        "num_tokens": sums["num_tokens"],
        "num_sequences": sums["num_sequences"],
    }
    if "kl_sum" in sums:
        out["kl"] = sums["kl_sum"] / tokens
    if "dual_clip_sum" in sums:
        out["dual_clip_frac"] = sums["dual_clip_sum"] / tokens
    return out


def grpo_loss(
    logps: jax.Array,
    old_logps: jax.Array | None,
    ref_logps: jax.Array | None,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    loss_type: str = "grpo",
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    kl_bias_correction: bool = False,
    max_completion_length: int | None = None,
    importance_weights: jax.Array | None = None,
    num_items_in_batch: jax.Array | float | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(loss, metrics) of one batch; arguments as `grpo_loss_terms`, metrics as `grpo_metrics`.

    num_items_in_batch (dapo only, TRL's argument): the active-token count of the whole
    global batch when this call sees one micro-batch; the loss is then sum m l /
    num_items_in_batch and the micro-batch losses add up to the global one. Default: the
    tokens of this batch.
    """
    numerator, denominator, sums = grpo_loss_terms(
        logps, old_logps, ref_logps, advantages, mask, loss_type=loss_type, eps_low=eps_low,
        eps_high=eps_high, dual_clip=dual_clip, beta=beta, kl_estimator=kl_estimator,
        kl_bias_correction=kl_bias_correction, max_completion_length=max_completion_length,
        importance_weights=importance_weights,
    )
    if num_items_in_batch is not None:
        if loss_type != "dapo":
            raise ValueError(
                f"grpo_loss: num_items_in_batch is only used by loss_type='dapo', got {loss_type!r}"
            )
        denominator = jax.lax.stop_gradient(jnp.asarray(num_items_in_batch, jnp.float32))
    return accumulated_loss(numerator, denominator), grpo_metrics(sums)
