"""Token selections that are statistics of the whole update batch (not of a micro-batch).

Each returns an fp32 [B, T] 0/1 array, a constant for the loss. Computing it once on the
whole batch (the trainer does so from a gradient-free pass) and slicing it per micro-batch
keeps gradient accumulation exact; TRL and verl compute them per micro-batch, which is the
same thing only when the step has one micro-batch.

    high_entropy_mask   keep tokens with H >= quantile_{1-q}(H over valid tokens)
                        (TRL top_entropy_quantile = q; Wang et al. 2025, "80/20 forking tokens")
    clip_cov_selection  verl clip_cov: among valid, not-already-clipped tokens with
                        lb < cov < ub pick max(floor(ratio * N), 1); cov = (A - mean A)(logp - mean logp)
    kl_cov_selection    verl kl_cov: the max(1, floor(N * ratio)) valid tokens of largest cov
Means are over the valid tokens of the batch; N is their count.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1v2_jax.losses._checks import check_ndim, check_shape, check_static_float


def _prep(fn, logps, advantages, mask):
    check_ndim(fn, "logps", logps, 2)
    check_shape(fn, "mask", mask, logps.shape)
    adv = advantages.astype(jnp.float32)
    adv = adv[:, None] if adv.ndim == 1 else adv
    adv = jnp.broadcast_to(adv, logps.shape)
    valid = mask > 0
    return jnp.where(valid, logps.astype(jnp.float32), 0.0), adv, valid


def _covariance(lp, adv, valid):
    n = jnp.maximum(jnp.sum(valid), 1)
    mean_adv = jnp.sum(jnp.where(valid, adv, 0.0)) / n
    mean_lp = jnp.sum(jnp.where(valid, lp, 0.0)) / n
    return (adv - mean_adv) * (lp - mean_lp)


def _first_k(keys: jax.Array, eligible: jax.Array, k: jax.Array) -> jax.Array:
    """eligible entries whose key is among the k smallest eligible keys."""
    flat = jnp.where(eligible, keys, jnp.inf).reshape(-1)
    rank = jnp.argsort(jnp.argsort(flat, stable=True), stable=True).reshape(keys.shape)
    return eligible & (rank < k)


def high_entropy_mask(entropies: jax.Array, mask: jax.Array, top_entropy_quantile: float) -> jax.Array:
    fn = "high_entropy_mask"
    q = check_static_float(fn, "top_entropy_quantile", top_entropy_quantile)
    if not 0.0 < q <= 1.0:
        raise ValueError(f"{fn}: top_entropy_quantile must be in (0, 1], got {q}")
    check_shape(fn, "mask", mask, entropies.shape)
    valid = mask > 0
    ent = entropies.astype(jnp.float32)
    threshold = jnp.nanquantile(jnp.where(valid, ent, jnp.nan), 1.0 - q)
    return (valid & (ent >= threshold)).astype(jnp.float32)


def clip_cov_selection(logps, old_logps, advantages, mask, *, eps_low: float = 0.2,
                       eps_high: float = 0.2, clip_cov_ratio: float = 2e-4,
                       clip_cov_lb: float = 1.0, clip_cov_ub: float = 5.0, priority=None):
    """verl picks the clip_num tokens at random among the eligible ones; `priority` [B, T]
    (e.g. uniform noise) reproduces that: the eligible tokens of smallest priority are
    taken. Default (None): the eligible tokens of largest covariance, deterministically."""
    fn = "clip_cov_selection"
    ratio = check_static_float(fn, "clip_cov_ratio", clip_cov_ratio)
    if ratio <= 0:
        raise ValueError(f"{fn}: clip_cov_ratio must be > 0, got {ratio}")
    lp, adv, valid = _prep(fn, logps, advantages, mask)
    lp = jax.lax.stop_gradient(lp)
    cov = _covariance(lp, adv, valid)
    w = jnp.ones_like(lp) if old_logps is None else jnp.exp(jnp.where(valid, lp - old_logps, 0.0))
    clipped = -adv * jnp.clip(w, 1.0 - eps_low, 1.0 + eps_high) > -adv * w
    eligible = valid & ~clipped & (cov > clip_cov_lb) & (cov < clip_cov_ub)
    k = jnp.maximum(jnp.floor(ratio * jnp.sum(valid)), 1.0)
    keys = -cov if priority is None else priority.astype(jnp.float32)
    return _first_k(keys, eligible, k).astype(jnp.float32)


def kl_cov_selection(logps, advantages, mask, *, kl_cov_ratio: float = 2e-4):
    fn = "kl_cov_selection"
    ratio = check_static_float(fn, "kl_cov_ratio", kl_cov_ratio)
    if ratio <= 0:
        raise ValueError(f"{fn}: kl_cov_ratio must be > 0, got {ratio}")
    lp, adv, valid = _prep(fn, logps, advantages, mask)
    cov = _covariance(jax.lax.stop_gradient(lp), adv, valid)
    k = jnp.maximum(jnp.floor(jnp.sum(valid) * ratio), 1.0)
    return _first_k(-cov, valid, k).astype(jnp.float32)
