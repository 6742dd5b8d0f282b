"""Qwen2 decoder (the reasoning LM): GQA attention with q/k/v bias and RoPE, SwiGLU MLP,
RMSNorm, scanned layers, and a functional KV cache.

One code path serves training and decoding. Attention visibility is defined on *slots*
(indices into the key sequence): a query in slot t sees key slot s iff s <= t and slot s
holds a real token (`kv_mask`). Without a cache the keys are the current tokens (slot =
index); with a cache the T new tokens are written at slots [cache_index, cache_index + T)
and attend over the whole cache. RoPE positions are separate from slots, so left padding
and packed sequences get correct positions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1v2_jax.models.attention import attention, causal_mask
from r1v2_jax.models.config import VLMConfig
from r1v2_jax.models.layers import Dense, RMSNorm, param_with_axes, scan_layers


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    """Stacked per-layer keys and values, [L, B, S, Hkv, D] each."""

    k: jax.Array
    v: jax.Array

    @classmethod
    def init(cls, config: VLMConfig, batch: int, max_len: int, dtype: Any = None) -> "KVCache":
        tc = config.text
        shape = (tc.num_hidden_layers, batch, max_len, tc.num_key_value_heads, tc.head_dim)
        dtype = config.jnp_dtype if dtype is None else dtype
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def apply_rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding, rotate-half convention (as HF Qwen2), angles in fp32.

    x [B, T, H, D], positions [B, T].
    """
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
    cos = jnp.cos(jnp.concatenate([angles, angles], -1))[:, :, None, :].astype(x.dtype)
    sin = jnp.sin(jnp.concatenate([angles, angles], -1))[:, :, None, :].astype(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    config: VLMConfig

    @nn.compact
    def __call__(self, h, positions, mask, segment_ids, cache_k, cache_v, cache_index):
        cfg, tc = self.config, self.config.text
        dtype, pdtype = cfg.jnp_dtype, cfg.jnp_param_dtype
        hq, hkv, d = tc.num_attention_heads, tc.num_key_value_heads, tc.head_dim
        q = Dense((hq, d), ("embed",), ("heads", "kv"), True, dtype, pdtype, name="q_proj")(h)
        k = Dense((hkv, d), ("embed",), ("kv_heads", "kv"), True, dtype, pdtype, name="k_proj")(h)
        v = Dense((hkv, d), ("embed",), ("kv_heads", "kv"), True, dtype, pdtype, name="v_proj")(h)
        q = apply_rope(q, positions, tc.rope_theta)
        k = apply_rope(k, positions, tc.rope_theta)
        impl, causal_block = cfg.attention_impl, cfg.causal_block
        if cache_k is not None:
            causal_block = 0  # queries at cache slots: not the keys' own positions
            start = (0, cache_index, 0, 0)
            cache_k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), start)
            cache_v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), start)
            k, v = cache_k.astype(dtype), cache_v.astype(dtype)
            if impl == "splash":
                impl = "xla"  # splash serves full causal sequences only
        out = attention(q, k, v, mask, impl=impl, segment_ids=segment_ids,
                        causal_block=causal_block)
        out = Dense((tc.hidden_size,), ("heads", "kv"), ("embed",), False, dtype, pdtype,
                    name="o_proj")(out)
        return out, cache_k, cache_v


class DecoderLayer(nn.Module):
    config: VLMConfig

    @nn.compact
    def __call__(self, x, positions, mask, segment_ids, cache_k, cache_v, cache_index):
        cfg, tc = self.config, self.config.text
        dtype, pdtype = cfg.jnp_dtype, cfg.jnp_param_dtype
        h = RMSNorm(tc.rms_norm_eps, dtype, pdtype, "embed", name="input_norm")(x)
        attn, cache_k, cache_v = Attention(cfg, name="attn")(
            h, positions, mask, segment_ids, cache_k, cache_v, cache_index)
        x = x + attn
        h = RMSNorm(tc.rms_norm_eps, dtype, pdtype, "embed", name="post_attention_norm")(x)
        x = x + MLP(cfg, name="mlp")(h)
        return x, (cache_k, cache_v)


class MLP(nn.Module):
    config: VLMConfig

    @nn.compact
    def __call__(self, x):
        cfg, tc = self.config, self.config.text
        dense = lambda out, i, o, name: Dense((out,), (i,), (o,), False, cfg.jnp_dtype,
                                              cfg.jnp_param_dtype, name=name)
        gate = dense(tc.intermediate_size, "embed", "mlp", "gate_proj")(x)
        up = dense(tc.intermediate_size, "embed", "mlp", "up_proj")(x)
        return dense(tc.hidden_size, "mlp", "embed", "down_proj")(jax.nn.silu(gate) * up)


class Qwen2(nn.Module):
    """embed(ids) -> decode(embeds, ...) -> hidden -> logits(hidden)."""

    config: VLMConfig

    def setup(self):
        cfg, tc = self.config, self.config.text
        self.embed_tokens = Embedding(tc.vocab_size, tc.hidden_size, cfg.jnp_dtype,
                                      cfg.jnp_param_dtype)
        stack = scan_layers(DecoderLayer, tc.num_hidden_layers, cfg.remat_policy,
                            in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0, 0, nn.broadcast))
        self.layers = stack(cfg)
        self.norm = RMSNorm(tc.rms_norm_eps, cfg.jnp_dtype, cfg.jnp_param_dtype, "embed")
        if not tc.tie_word_embeddings:
            self.lm_head = Dense((tc.vocab_size,), ("embed",), ("vocab",), False, cfg.jnp_dtype,
                                 cfg.jnp_param_dtype, kernel_init=nn.initializers.normal(0.02))

    def embed(self, input_ids):
        return self.embed_tokens(input_ids)

    def decode(self, embeds, positions, kv_mask, cache: KVCache | None = None,
               cache_index=None, segment_ids=None):
        """Runs the layers and the final norm. Returns (hidden [B, T, E], new cache or None).

        kv_mask: [B, T] (no cache: the attention mask) or [B, S] (cache: valid slots,
        including the T slots being written now). segment_ids [B, T] for packed training.
        """
        b, t = embeds.shape[:2]
        offset = 0 if cache is None else cache_index
        q_slots = jnp.broadcast_to(offset + jnp.arange(t, dtype=jnp.int32), (b, t))
        kv_segments = segment_ids if cache is None else None
        mask = causal_mask(q_slots, kv_mask.astype(bool), segment_ids, kv_segments)
        seg = segment_ids
        if seg is None and cache is None:
            seg = kv_mask.astype(jnp.int32)  # splash: padding = segment 0
        ck, cv = (None, None) if cache is None else (cache.k, cache.v)
        x, (ck, cv) = self.layers(embeds, positions, mask, seg, ck, cv,
                                  None if cache is None else offset)
        hidden = self.norm(x)
        return hidden, (None if cache is None else KVCache(ck, cv))

    def logits(self, hidden):
        if self.config.text.tie_word_embeddings:
            return hidden @ self.embed_tokens.embedding.T.astype(hidden.dtype)
        return self.lm_head(hidden)


class Embedding(nn.Module):
    num: int
    features: int
    dtype: Any
    param_dtype: Any

    def setup(self):
        self.embedding = param_with_axes(self, "embedding", nn.initializers.normal(0.02),
                                         (self.num, self.features), self.param_dtype,
                                         ("vocab", "embed"))

    def __call__(self, ids):
        return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)
