"""optax AdamW with warmup + cosine/constant schedule and global-norm clipping."""

from __future__ import annotations

import jax.numpy as jnp
import optax


def learning_rate_schedule(cfg) -> optax.Schedule:
    """cfg: optim ConfigDict with lr, warmup_steps, schedule ('cosine'|'constant'),
    total_steps, final_lr_ratio."""
    warmup = int(cfg.warmup_steps)
    if cfg.schedule == "constant":
        main = optax.constant_schedule(cfg.lr)
    elif cfg.schedule == "cosine":
        decay = max(int(cfg.total_steps) - warmup, 1)
        main = optax.cosine_decay_schedule(cfg.lr, decay, alpha=float(cfg.final_lr_ratio))
    else:
        raise ValueError(f"optim.schedule must be 'cosine' or 'constant', got {cfg.schedule!r}")
    if warmup <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), main], [warmup])


def make_optimizer(cfg) -> optax.GradientTransformation:
    """AdamW on the trainable parameters. With `master_fp32`, bf16 parameters keep fp32
    master weights and optimizer moments (the update is applied in fp32 and cast back)."""
    tx = optax.chain(
        optax.clip_by_global_norm(float(cfg.clip_norm)) if cfg.clip_norm > 0 else optax.identity(),
        optax.adamw(learning_rate_schedule(cfg), b1=float(cfg.b1), b2=float(cfg.b2),
                    eps=float(cfg.eps), weight_decay=float(cfg.weight_decay),
                    mu_dtype=jnp.float32),
    )
    return tx
