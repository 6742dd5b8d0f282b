"""DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), a pure reward-shaping term."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1v2_jax.losses._checks import check_static_float


def overlong_penalty(
    lengths: jax.Array, max_len: int, cache_len: int, *, penalty_factor: float = 1.0
) -> jax.Array:
    """Length reward R_len per completion, fp32, same shape as `lengths`.

        R_len = 0                                  if L <= max_len - cache_len
              = ((max_len - cache_len) - L) / cache_len   if max_len - cache_len < L <= max_len
              = -1                                 if L > max_len
    multiplied by `penalty_factor` (verl's `overlong_penalty_factor`, 1.0 in DAPO).
    The ramp is continuous: it reaches -1 exactly at L = max_len.
    """
    fn = "overlong_penalty"
    for name, value in (("max_len", max_len), ("cache_len", cache_len)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{fn}: {name} must be a Python int, got {value!r}")
    if not 0 < cache_len <= max_len:
        raise ValueError(f"{fn}: need 0 < cache_len <= max_len, got cache_len={cache_len}, max_len={max_len}")
    penalty_factor = check_static_float(fn, "penalty_factor", penalty_factor)

    lengths = jnp.asarray(lengths).astype(jnp.float32)
    expected = max_len - cache_len
    ramp = (expected - lengths) / cache_len
    shaped = jnp.where(lengths <= expected, 0.0, jnp.where(lengths <= max_len, ramp, -1.0))
    return penalty_factor * shaped
