"""Outcome advantages for group-sampled completions (GRPO, Dr. GRPO, RLOO, REINFORCE++).

Rewards are a flat [B] vector whose groups are contiguous: rows [g*G, (g+1)*G) are the G
completions of prompt g (TRL's RepeatSampler / Tunix layout).

References: TRL 1.x `GRPOTrainer._generate_and_score_completions` (scale_rewards
"group" / "batch" / "none", torch unbiased std, eps 1e-4); Tunix `rl/algo_core.py`
`compute_advantages` (ddof=1, eps 1e-6), `compute_rloo_advantages`,
`compute_drgrpo_advantages`; verl `core_algos.py`
`compute_rloo_outcome_advantage`, `compute_reinforce_plus_plus_baseline_outcome_advantage`.

Registered estimators (`registry.ADVANTAGE_ESTIMATORS`) share the signature
`fn(rewards [B], group_size, *, scale, std_ddof, eps, lengths=None) -> [B]`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1v2_jax.losses._checks import check_choice, check_ndim, check_static_float

SCALES = ("group", "batch", "none")
ESTIMATORS = ("grpo", "rloo")


def group_advantages(
    rewards: jax.Array,
    group_size: int,
    *,
    scale: str = "group",
    std_ddof: int = 1,
    eps: float = 1e-4,
    estimator: str = "grpo",
) -> jax.Array:
    """Per-completion advantages [B] fp32.

    centred:  grpo: c_i = r_i - mean_group(r)
              rloo: c_i = r_i - mean of the G-1 other rewards of the group
                        = G/(G-1) * (r_i - mean_group(r))
    scaled:   scale="group": A_i = c_i / (std_group(r) + eps)
              scale="batch": A_i = c_i / (std_batch(r) + eps)   (TRL scale_rewards="batch")
              scale="none":  A_i = c_i                            (Dr. GRPO)
    std uses `std_ddof` (1 = unbiased as torch/TRL/Tunix; 0 = population).
    A group whose rewards are all equal gets exactly A = 0 for every member: float
    rounding of the mean (G = 5, 6, 7, 12 with rewards like 0.1) would otherwise leave
    |c| ~ 1e-8 that the std division blew up to |A| ~ 6e-4..2.4e-3.
    """
    fn = "group_advantages"
    check_choice(fn, "scale", scale, SCALES)
    check_choice(fn, "estimator", estimator, ESTIMATORS)
    check_ndim(fn, "rewards", rewards, 1)
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"{fn}: group_size must be a positive Python int, got {group_size!r}")
    batch = rewards.shape[0]
    if batch % group_size:
        raise ValueError(f"{fn}: rewards length {batch} is not a multiple of group_size {group_size}")
    if std_ddof not in (0, 1):
        raise ValueError(f"{fn}: std_ddof must be 0 or 1, got {std_ddof!r}")
    eps = check_static_float(fn, "eps", eps)
    if estimator == "rloo" and group_size < 2:
        raise ValueError(f"{fn}: estimator='rloo' needs group_size >= 2 (a leave-one-out baseline)")
    if scale == "group" and group_size <= std_ddof:
        raise ValueError(f"{fn}: scale='group' with std_ddof={std_ddof} needs group_size > {std_ddof}")
    if scale == "batch" and batch <= std_ddof:
        raise ValueError(f"{fn}: scale='batch' with std_ddof={std_ddof} needs more than {std_ddof} rewards")

    grouped = rewards.astype(jnp.float32).reshape(-1, group_size)
    centred = _centred(grouped, estimator)
    if scale == "group":
        centred = centred / (jnp.std(grouped, axis=1, ddof=std_ddof, keepdims=True) + eps)
    elif scale == "batch":
        centred = centred / (jnp.std(grouped, ddof=std_ddof) + eps)
    return centred.reshape(batch)


def _centred(grouped: jax.Array, estimator: str) -> jax.Array:
    """r - baseline per group [N, G]; exactly 0 in a group whose rewards are all equal."""
    group_size = grouped.shape[1]
    if estimator == "grpo":
        centred = grouped - jnp.mean(grouped, axis=1, keepdims=True)
    else:
        leave_one_out_mean = (jnp.sum(grouped, axis=1, keepdims=True) - grouped) / (group_size - 1)
        centred = grouped - leave_one_out_mean
    flat = jnp.max(grouped, axis=1, keepdims=True) == jnp.min(grouped, axis=1, keepdims=True)
    return jnp.where(flat, 0.0, centred)


def grpo_advantages(rewards, group_size, *, scale="group", std_ddof=1, eps=1e-4, lengths=None):
    """GRPO (TRL scale_rewards = `scale`; verl grpo with norm_adv_by_std_in_grpo=True)."""
    return group_advantages(rewards, group_size, scale=scale, std_ddof=std_ddof, eps=eps)


def dr_grpo_advantages(rewards, group_size, *, scale="none", std_ddof=1, eps=1e-4, lengths=None):
    """Dr. GRPO: r - mean_group(r), no std scaling whatever `scale` says (verl
    norm_adv_by_std_in_grpo=False, TRL scale_rewards="none")."""
    return group_advantages(rewards, group_size, scale="none", std_ddof=std_ddof, eps=eps)


def rloo_advantages(rewards, group_size, *, scale="none", std_ddof=1, eps=1e-4, lengths=None):
    """RLOO: r_i - mean of the other G-1 rewards (verl rloo), then `scale` as GRPO
    (scale="none" is verl's / Ahmadian et al.'s RLOO)."""
    return group_advantages(rewards, group_size, scale=scale, std_ddof=std_ddof, eps=eps,
                            estimator="rloo")


def reinforce_pp_advantages(rewards, group_size, *, scale="batch", std_ddof=1, eps=1e-8,
                            lengths=None):
    """REINFORCE++ (baseline variant, Hu 2025; verl reinforce_plus_plus_baseline):
        c = r - mean_group(r);  A = (c - mean(c)) / sqrt(var(c) + eps)
    mean / unbiased var over the batch; verl whitens the per-token copies of c, so with
    `lengths` [B] (completion token counts) every completion weighs its token count, as
    verl's masked_whiten. `scale` is ignored (the normalisation is always batch-wide)."""
    fn = "reinforce_pp_advantages"
    check_ndim(fn, "rewards", rewards, 1)
    eps = check_static_float(fn, "eps", eps)
    if rewards.shape[0] % group_size:
        raise ValueError(f"{fn}: rewards length {rewards.shape[0]} is not a multiple of "
                         f"group_size {group_size}")
    grouped = rewards.astype(jnp.float32).reshape(-1, group_size)
    c = (_centred(grouped, "grpo") if group_size > 1 else grouped).reshape(-1)
    w = jnp.ones_like(c) if lengths is None else jnp.asarray(lengths, jnp.float32)
    n = jnp.sum(w)
    mean = jnp.sum(w * c) / n
    var = jnp.sum(w * jnp.square(c - mean)) / n * (n / (n - 1.0))  # torch unbiased var
    return (c - mean) * jax.lax.rsqrt(var + eps)
