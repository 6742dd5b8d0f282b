"""One KV-cached decode step that runs the model's own layers one by one.

`Qwen2.decode` scans over layer-stacked parameters ([L, ...]). Inside a decode loop that
means slicing every layer's weights out of the stack at every step, and on CPU XLA
materialises those slices: a full copy of the LM weights per generated token, which
doubles the (memory-bound) decode time. Here the stack is split ONCE before the loop and
each step applies the very same `DecoderLayer` module to its own slice, with one KV cache
per layer. The maths is `Qwen2.decode` for T = 1 (embed -> layers -> final norm -> head);
the generation tests check it against the scanned forward token by token.
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
                tokens: jax.Array, positions: jax.Array, slot: jax.Array,
                kv_mask: jax.Array) -> tuple[jax.Array, LayerCaches]:
    """Feeds tokens [R] at cache slot `slot` with RoPE positions [R].

    kv_mask [R, S] marks the valid cache slots. Returns (fp32 logits [R, V], new caches).
    """
    model = VLM(config)
    x = model.apply({"params": params}, tokens[:, None], method=lambda m, ids: m.text.embed(ids))
    q_slots = jnp.full((tokens.shape[0], 1), slot, jnp.int32)
    mask = causal_mask(q_slots, kv_mask)
    layer = DecoderLayer(config)
    new_caches = []
    for layer_params, (k, v) in zip(layers, caches):
        x, (k, v) = layer.apply({"params": layer_params}, x, positions[:, None], mask, None,
                                k, v, slot)
        new_caches.append((k, v))
    logits = model.apply({"params": params}, x[:, 0],
                         method=lambda m, h: m.text.logits(m.text.norm(h)))
    return logits.astype(jnp.float32), new_caches
