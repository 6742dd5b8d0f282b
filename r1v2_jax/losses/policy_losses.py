"""Per-token policy objectives, selected by name through `registry.POLICY_LOSSES`.

Each takes a `PolicyInputs` and the static options, and returns
(per_token_loss, is_low, is_high): the loss before masking / aggregation ([B, T] or [B, 1],
broadcast over tokens) and the clip indicators the metrics count. Notation:
w = importance weight exp(log_w) at the chosen level (token / sequence / sequence_token),
A = advantage, r = logp - logp_old per token, sg = stop_gradient, m = mask.

    grpo      l = -min(w A, clip(w, 1-eps_low, 1+eps_high) A);  dual clip c (A<0): min(l, -c A)
    cispo     l = -sg(min(w, cispo_max)) A logp
    gmpo      l = -A exp(sum_t m r~ / n),  r~ = sgn(A) min(sgn(A) r, sgn(A) clip(r, -eps_low, eps_high))
    sapo      l = -(4 / tau) sigmoid(tau (w - 1)) A,  tau = tau_pos if A > 0 else tau_neg
    clip_cov  l = (1 - s) max(-A w, -A clip(w, 1-eps_low, 1+eps_high))    s: selected tokens
    kl_cov    l = -A w + s * ppo_kl_coef * |r|                           s: selected tokens
The selections s of clip_cov / kl_cov are batch statistics: see `token_selection`.
Sources: TRL 1.x `GRPOTrainer._compute_loss` (grpo, cispo, sapo, importance_sampling_level);
verl `core_algos.py` compute_policy_loss_{vanilla, geo_mean, clip_cov, kl_cov}.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class PolicyInputs(NamedTuple):
    log_w: jax.Array  # log importance weight, [B, T] or [B, 1]; carries the gradient
    logps: jax.Array  # current log-probs, padding zeroed, [B, T]
    log_ratio: jax.Array  # per-token logp - logp_old, padding zeroed, [B, T]
    adv: jax.Array  # [B, 1] or [B, T], constant
    mask: jax.Array  # fp32 [B, T]
    selection: jax.Array | None  # fp32 [B, T] (clip_cov / kl_cov), constant


def _zeros(x):
    return jnp.zeros(x.shape, bool)


def clipped_surrogate(x: PolicyInputs, *, eps_low, eps_high, dual_clip=None, **_):
    w = jnp.exp(x.log_w)
    clipped = jnp.clip(w, 1.0 - eps_low, 1.0 + eps_high)
    loss = -jnp.minimum(w * x.adv, clipped * x.adv)
    if dual_clip is not None:
        loss = jnp.where(x.adv < 0, jnp.minimum(loss, -float(dual_clip) * x.adv), loss)
    return loss, (w < 1.0 - eps_low) & (x.adv < 0), (w > 1.0 + eps_high) & (x.adv > 0)


def cispo(x: PolicyInputs, *, cispo_max, **_):
    w = jnp.exp(x.log_w)
    weight = jax.lax.stop_gradient(jnp.minimum(w, cispo_max))
    # The gradient flows through log pi itself, so a capped token still gets -cap * A * grad logp.
    return -weight * x.adv * x.logps, _zeros(w), (w > cispo_max) & (x.adv > 0)


def gmpo(x: PolicyInputs, *, eps_low, eps_high, **_):
    n = jnp.sum(x.mask, axis=1, keepdims=True)
    adv = x.adv if x.adv.shape[1] == 1 else jnp.sum(x.adv * x.mask, 1, keepdims=True) / jnp.maximum(n, 1.0)
    sgn = jnp.sign(adv)
    r_clip = jnp.clip(x.log_ratio, -eps_low, eps_high)
    r_min = sgn * jnp.minimum(sgn * x.log_ratio, sgn * r_clip)
    seq_ratio = jnp.exp(jnp.sum(r_min * x.mask, axis=1, keepdims=True) / jnp.maximum(n, 1.0))
    clipped = x.log_ratio != r_clip
    return -adv * seq_ratio, clipped & (x.adv < 0), clipped & (x.adv > 0)


def sapo(x: PolicyInputs, *, sapo_temperature_pos, sapo_temperature_neg, **_):
    w = jnp.exp(x.log_w)
    tau = jnp.where(x.adv > 0, sapo_temperature_pos, sapo_temperature_neg)
    soft = jax.nn.sigmoid(tau * (w - 1.0)) * 4.0 / tau
    return -soft * x.adv, _zeros(w), _zeros(w)


def clip_cov(x: PolicyInputs, *, eps_low, eps_high, **_):
    w = jnp.exp(x.log_w)
    loss = jnp.maximum(-x.adv * w, -x.adv * jnp.clip(w, 1.0 - eps_low, 1.0 + eps_high))
    return (loss * (1.0 - x.selection), (w < 1.0 - eps_low) & (x.adv < 0),
            (w > 1.0 + eps_high) & (x.adv > 0))


def kl_cov(x: PolicyInputs, *, ppo_kl_coef, **_):
    w = jnp.exp(x.log_w)
    loss = -x.adv * w + x.selection * ppo_kl_coef * jnp.abs(x.log_ratio)
    return loss, _zeros(loss), _zeros(loss)


NEEDS_SELECTION = ("clip_cov", "kl_cov")
TOKEN_LEVEL_ONLY = ("gmpo", "clip_cov", "kl_cov")  # they define their own ratio
