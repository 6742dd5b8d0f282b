"""The unstacked decode step equals the model's scanned forward with a KV cache."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1v2_jax.generate.decode import decode_step, split_cache, split_layers
from r1v2_jax.models import VLM, KVCache


@pytest.mark.parametrize("per_row_slots", [False, True])  # whole batch / vmapped rows
def test_decode_step_matches_the_scanned_forward(tiny, per_row_slots):
    config, params = tiny
    rng = np.random.default_rng(0)
    b, p, s = 2, 5, 8
    ids = jnp.asarray(rng.integers(1, 60, (b, p)), jnp.int32)
    valid = jnp.asarray([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)  # row 0 left-padded
    positions = jnp.maximum(jnp.cumsum(valid, -1) - 1, 0)
    kv_mask = jnp.concatenate([valid, jnp.ones((b, s - p), bool)], 1)
    model = VLM(config)
    forward = jax.jit(lambda params, ids, positions, cache, index: model.apply(
        {"params": params}, ids, positions=positions, cache=cache, cache_index=index,
        kv_mask=kv_mask))
    prefill = forward(params, ids, positions, KVCache.init(config, b, s), 0)
    token = jnp.asarray([7, 11], jnp.int32)
    next_pos = positions[:, -1] + 1
    ref = forward(params, token[:, None], next_pos[:, None], prefill.cache, p)
    logits, caches = jax.jit(decode_step, static_argnums=0)(
        config, params, split_layers(params), split_cache(prefill.cache), token, next_pos,
        jnp.full((b,), p, jnp.int32) if per_row_slots else jnp.int32(p), kv_mask)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(ref.logits[:, 0]), atol=1e-5)
    assert logits.dtype == jnp.float32
    for layer, (k, v) in enumerate(caches):
        np.testing.assert_allclose(np.asarray(k), np.asarray(ref.cache.k[layer]), atol=1e-6)
        np.testing.assert_allclose(np.asarray(v), np.asarray(ref.cache.v[layer]), atol=1e-6)
