"""Outcome advantages for group-sampled completions (GRPO, Dr. GRPO, RLOO).

Rewards are a flat [B] vector whose groups are contiguous: rows [g*G, (g+1)*G) are the G
completions of prompt g (TRL's RepeatSampler / Tunix layout).

References: TRL 1.x `GRPOTrainer._generate_and_score_completions` (scale_rewards
"group" / "batch" / "none", torch unbiased std, eps 1e-4); Tunix `rl/algo_core.py`
`compute_advantages` (ddof=1, eps 1e-6), `compute_rloo_advantages`,
`compute_drgrpo_advantages`.
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
    A group whose rewards are all equal gets A = 0 for every member.
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
    group_mean = jnp.mean(grouped, axis=1, keepdims=True)
    if estimator == "grpo":
        centred = grouped - group_mean
    else:
        leave_one_out_mean = (jnp.sum(grouped, axis=1, keepdims=True) - grouped) / (group_size - 1)
        centred = grouped - leave_one_out_mean

    if scale == "group":
        centred = centred / (jnp.std(grouped, axis=1, ddof=std_ddof, keepdims=True) + eps)
    elif scale == "batch":
        centred = centred / (jnp.std(grouped, ddof=std_ddof) + eps)
    return centred.reshape(batch)
