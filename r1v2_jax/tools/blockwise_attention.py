"""A memory stand-in for the flash-attention kernels, for planning on CPU.

cuDNN and splash attention never materialise the [T, S] score matrix; neither compiles for
CPU, where `r1v2 plan` compiles. `blockwise_attention` computes exactly the XLA path's
maths one block of queries at a time (`lax.map` under `jax.checkpoint`), so a compiled
program holds [block, S] scores instead of [T, S]: its memory follows the flash kernels'
shape (the kernels tile keys too, so they need even less). `flash_memory_model()`
substitutes it for the XLA path while planning; FLOPs are unchanged.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp

from r1v2_jax.models import attention as attention_module

DEFAULT_BLOCK = 512


def blockwise_attention(q, k, v, mask, scale, *, block: int = DEFAULT_BLOCK,
                        exact=attention_module.xla_attention):
    """`exact(q, k, v, mask, scale)` evaluated `block` queries at a time.
    q [B, T, Hq, D], k/v [B, S, Hkv, D], mask [B, T, S] bool or None."""
    b, t = q.shape[:2]
    if t <= block:
        return exact(q, k, v, mask, scale)
    pad = -t % block
    n = (t + pad) // block
    qp = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))
    q_blocks = jnp.moveaxis(qp.reshape((b, n, block) + q.shape[2:]), 1, 0)
    if mask is None:
        mask = jnp.ones((b, t, k.shape[1]), bool)
    mp = jnp.pad(mask, ((0, 0), (0, pad), (0, 0)))
    m_blocks = jnp.moveaxis(mp.reshape(b, n, block, mask.shape[-1]), 1, 0)
    one = jax.checkpoint(lambda qm: exact(qm[0], k, v, qm[1], scale))
    out = jax.lax.map(one, (q_blocks, m_blocks))  # [n, B, block, Hq, D]
    return jnp.moveaxis(out, 0, 1).reshape((b, t + pad) + q.shape[2:])[:, :t]


@contextlib.contextmanager
def flash_memory_model(block: int = DEFAULT_BLOCK):
    """Within the block, the models' "xla" attention runs blockwise (trace-time swap)."""
    exact = attention_module.xla_attention

    def swapped(q, k, v, mask, scale):
        return blockwise_attention(q, k, v, mask, scale, block=block, exact=exact)

    attention_module.xla_attention = swapped
    try:
        yield
    finally:
        attention_module.xla_attention = exact
