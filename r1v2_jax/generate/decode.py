"""The one KV-cached decode step of the package: every row writes its own cache slot.

`Qwen2.decode` scans over layer-stacked parameters ([L, ...]). Inside a decode loop that
means slicing every layer's weights out of the stack at every step, and on CPU XLA
materialises those slices: a full copy of the LM weights per generated token, which
doubles the (memory-bound) decode time. Here the stack is split ONCE before the loop and
each step applies the very same `DecoderLayer` module to its own slice, with one KV cache
per layer. The maths is `Qwen2.decode` for T = 1 (embed -> layers -> final norm -> head);
tests/generate/test_decode.py checks it against the scanned forward.

Rows write at their own slot (`slots` [R]): continuous batching puts rows of different
ages side by side. The layer is vmapped over rows (each row a batch of one, its cache
write a scatter); under a mesh, `spmd_axes` keeps the vmapped rows split over the batch
mesh axes inside the layer's sharding constraints. A scalar slot (the static engine: all
rows write the same one) runs the layer on the whole batch instead (off a mesh, or when
no mesh axis splits the rows).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1v2_jax.models import VLM, KVCache, VLMConfig
from r1v2_jax.models.attention import causal_mask
from r1v2_jax.models.qwen2 import DecoderLayer

LayerCaches = list[tuple[jax.Array, jax.Array]]  # per layer: k, v [R, S, Hkv, D]


def split_layers(params) -> list:
    """The text layers' parameters, one tree per layer."""
    stacked = params["text"]["layers"]
    n = jax.tree.leaves(stacked)[0].shape[0]
    return [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(n)]


def split_cache(cache: KVCache) -> LayerCaches:
    return [(cache.k[i], cache.v[i]) for i in range(cache.k.shape[0])]


def decode_step(config: VLMConfig, params, layers: list, caches: LayerCaches,
                tokens: jax.Array, positions: jax.Array, slots: jax.Array,
                kv_mask: jax.Array, spmd_axes: tuple[str, ...] | None = None
                ) -> tuple[jax.Array, LayerCaches]:
    """Feeds tokens [R] at cache slots `slots` [R] (or one scalar slot for every row) with
    RoPE positions [R]. kv_mask [R, S] marks the valid cache slots; a row sees the valid
    slots up to its own. Returns (fp32 logits [R, V], new caches)."""
    model = VLM(config)
    rows = tokens.shape[0]
    shared_slot = jnp.ndim(slots) == 0 and spmd_axes is None
    slots = jnp.asarray(slots, jnp.int32)
    row_slots = jnp.broadcast_to(slots, (rows,))
    x = model.apply({"params": params}, tokens[:, None], method=lambda m, ids: m.text.embed(ids))
    mask = causal_mask(row_slots[:, None], kv_mask)  # [R, 1, S]
    layer = DecoderLayer(config)
    if shared_slot:
        # One slot for every row (the static engine): the whole batch writes it with one
        # in-place dynamic_update_slice, as the model's forward does. The per-row vmap's
        # scatter made each step ~1.1-1.4x slower (docs/benchmarks.md).
        new_caches = []
        for layer_params, (k, v) in zip(layers, caches):
            x, (k, v) = layer.apply({"params": layer_params}, x, positions[:, None], mask, None,
                                    k, v, slots)
            new_caches.append((k, v))
        return _head(model, params, x), new_caches

    def one_row(layer_params, x, position, mask, k, v, slot):
        x, (k, v) = layer.apply({"params": layer_params}, x[None], position[None, None],
                                mask[None], None, k[None], v[None], slot)
        return x[0], k[0], v[0]

    rowwise = jax.vmap(one_row, in_axes=(None, 0, 0, 0, 0, 0, 0), spmd_axis_name=spmd_axes)
    new_caches = []
    for layer_params, (k, v) in zip(layers, caches):
        x, k, v = rowwise(layer_params, x, positions, mask, k, v, row_slots)
        new_caches.append((k, v))
    return _head(model, params, x), new_caches


def _head(model, params, x):
    """Final norm and LM head of the hidden states [R, 1, E] -> fp32 logits [R, V]."""
    logits = model.apply({"params": params}, x[:, 0],
                         method=lambda m, h: m.text.logits(m.text.norm(h)))
    return logits.astype(jnp.float32)


def decode_step_stacked(config: VLMConfig, params, cache: KVCache, tokens, positions, slots,
                        kv_mask, spmd_axes: tuple[str, ...] | None = None):
    """`decode_step` on a stacked cache [L, R, S, Hkv, D] (the planner's and the bandwidth
    benchmark's form of the state): returns (fp32 logits [R, V], new stacked cache)."""
    logits, caches = decode_step(config, params, split_layers(params), split_cache(cache),
                                 tokens, positions, slots, kv_mask, spmd_axes)
    return logits, KVCache(jnp.stack([k for k, _ in caches]), jnp.stack([v for _, v in caches]))
