"""optax AdamW with warmup + cosine/constant schedule and global-norm clipping.

`optim.warmup_steps` and `optim.total_steps` count trainer steps (a GRPO step, an MPO
step), not optimizer updates: a trainer that makes several updates per step (GRPO with
mini-batches or `num_iterations` > 1) passes `updates_per_step`, and every update of step
s gets the learning rate of step s.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax


def learning_rate_schedule(cfg, *, updates_per_step: int = 1) -> optax.Schedule:
    """cfg: optim ConfigDict with lr, warmup_steps, schedule ('cosine'|'constant'),
    total_steps, final_lr_ratio. The schedule maps optimizer update count c to the
    learning rate of trainer step c // updates_per_step."""
    if int(updates_per_step) < 1:
        raise ValueError(f"updates_per_step must be >= 1, got {updates_per_step}")
    warmup = int(cfg.warmup_steps)
    if cfg.schedule == "constant":
        main = optax.constant_schedule(cfg.lr)
    elif cfg.schedule == "cosine":
        decay = max(int(cfg.total_steps) - warmup, 1)
        main = optax.cosine_decay_schedule(cfg.lr, decay, alpha=float(cfg.final_lr_ratio))
    else:
        raise ValueError(f"optim.schedule must be 'cosine' or 'constant', got {cfg.schedule!r}")
    by_step = main if warmup <= 0 else optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.lr, warmup), main], [warmup])
    per = int(updates_per_step)
    if per == 1:
        return by_step
    return lambda count: by_step(count // per)


def make_optimizer(cfg, *, updates_per_step: int = 1) -> optax.GradientTransformation:
    """AdamW on the trainable parameters, learning rate from `learning_rate_schedule`
    (`updates_per_step`: optimizer updates per trainer step). With `master_fp32`, bf16
    parameters keep fp32 master weights and optimizer moments (the update is applied in
    fp32 and cast back)."""
    tx = optax.chain(
        optax.clip_by_global_norm(float(cfg.clip_norm)) if cfg.clip_norm > 0 else optax.identity(),
        optax.adamw(learning_rate_schedule(cfg, updates_per_step=updates_per_step),
                    b1=float(cfg.b1), b2=float(cfg.b2), eps=float(cfg.eps),
                    weight_decay=float(cfg.weight_decay), mu_dtype=jnp.float32),
    )
    return tx
