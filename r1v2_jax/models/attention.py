"""Scaled dot-product attention with grouped KV heads, one function per backend.

`attention(q, k, v, mask, impl=...)` takes q [B, T, Hq, D], k/v [B, S, Hkv, D] and a
boolean mask [B, T, S] (True = may attend) and returns [B, T, Hq, D]. Hq must be a multiple
of Hkv (GQA). Softmax is always computed in fp32.

Implementations (chosen by `VLMConfig.attention_impl`):
  xla    the reference: plain einsums, works everywhere (default on CPU);
  cudnn  `jax.nn.dot_product_attention(implementation="cudnn")`: flash attention on NVIDIA
         GPUs (bf16/fp16 inputs);
  splash Pallas splash attention on TPU, for causal training without a KV cache.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_NEG_INF = -1e30  # finite: a fully-masked row (a padding query) gets the mean of V, not NaN


def causal_mask(q_slots: jax.Array, kv_valid: jax.Array, q_segments: jax.Array | None = None,
                kv_segments: jax.Array | None = None) -> jax.Array:
    """Boolean [B, T, S] mask: key slot s is visible to query t iff s <= q_slots[b, t], the
    key slot holds a real token, and (when packing) both are in the same segment.

    q_slots [B, T] int: the cache slot (sequence index) each query occupies.
    kv_valid [B, S] bool: which key slots hold real tokens.
    """
    s = jnp.arange(kv_valid.shape[1], dtype=q_slots.dtype)
    mask = (s[None, None, :] <= q_slots[:, :, None]) & kv_valid[:, None, :]
    if q_segments is not None:
        mask &= q_segments[:, :, None] == kv_segments[:, None, :]
    return mask


def xla_attention(q, k, v, mask, scale):
    # Heads-major, with each KV head's query group folded into the query axis: two plain
    # batched matmuls [B*Hkv, G*T, D] x [B*Hkv, D, S] (XLA's CPU backend runs this layout
    # about 1.5x faster than the 5-D grouped einsum, backward included).
    b, t, hq, d = q.shape
    s, hkv = k.shape[1], k.shape[2]
    g = hq // hkv
    qh = q.reshape(b, t, hkv, g, d).transpose(0, 2, 3, 1, 4).reshape(b, hkv, g * t, d)
    kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, Hkv, S, D]
    logits = jnp.einsum("bkqd,bksd->bkqs", qh, kh, preferred_element_type=jnp.float32) * scale
    logits = logits.reshape(b, hkv, g, t, s)
    if mask is not None:
        logits = jnp.where(mask[:, None, None, :, :], logits, _NEG_INF)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype).reshape(b, hkv, g * t, s)
    out = jnp.einsum("bkqs,bksd->bkqd", probs, vh)
    return out.reshape(b, hkv, g, t, d).transpose(0, 3, 1, 2, 4).reshape(b, t, hq, d)


def causal_blocked_attention(q, k, v, mask, scale, block: int):
    """`xla_attention` for causal self-attention (no KV cache, key slot s = query index s),
    one block of queries at a time against the keys up to the block's end: the keys after
    it are masked for every query of the block, so skipping them changes nothing for a
    query that sees at least one key. A query that sees none (a padding query) gets an
    average of the values either way, over fewer of them here (its output is unused)."""
    t = q.shape[1]
    if k.shape[1] != t:
        raise ValueError(f"causal blocks need self-attention, got {t} queries, {k.shape[1]} keys")
    return jnp.concatenate(
        [xla_attention(q[:, i:i + block], k[:, :i + block], v[:, :i + block],
                       None if mask is None else mask[:, i:i + block, :i + block], scale)
         for i in range(0, t, block)], axis=1)


def cudnn_attention(q, k, v, mask, scale):
    # cuDNN flash attention wants [B, T, N, D] and supports GQA directly.
    return jax.nn.dot_product_attention(
        q, k, v, mask=None if mask is None else mask[:, None], scale=scale, implementation="cudnn")


def splash_attention(q, k, v, mask, scale, segment_ids=None):
    """Causal splash attention (TPU). Only for full-sequence causal attention (training /
    prefill without cache): padding and packing are expressed with segment ids."""
    from jax.experimental.pallas.ops.tpu.splash_attention import (  # TPU-only import
        splash_attention_kernel as sk, splash_attention_mask as sm)

    b, t, hq, d = q.shape
    if k.shape[1] != t:
        raise ValueError("splash attention serves causal self-attention without a KV cache; "
                         "use attention_impl='xla' for decoding")
    hkv = k.shape[2]
    kernel = sk.make_splash_mha(
        mask=sm.MultiHeadMask([sm.CausalMask((t, t)) for _ in range(hq)]),
        head_shards=1, q_seq_shards=1)
    qh = jnp.swapaxes(q * scale, 1, 2)  # [B, H, T, D]
    rep = hq // hkv
    kh = jnp.repeat(jnp.swapaxes(k, 1, 2), rep, axis=1)
    vh = jnp.repeat(jnp.swapaxes(v, 1, 2), rep, axis=1)
    seg = segment_ids if segment_ids is not None else jnp.ones((b, t), jnp.int32)
    out = jax.vmap(lambda qq, kk, vv, ss: kernel(qq, kk, vv, segment_ids=sk.SegmentIds(ss, ss)))(
        qh, kh, vh, seg)
    return jnp.swapaxes(out, 1, 2)


def attention(q, k, v, mask, *, impl: str = "xla", scale: float | None = None, segment_ids=None,
              causal_block: int = 0):
    """causal_block > 0: the call is causal self-attention (keys = the queries' own tokens,
    no cache); the xla path then runs `causal_blocked_attention` when T > 1 block."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if impl == "xla":
        if causal_block and q.shape[1] > causal_block:
            return causal_blocked_attention(q, k, v, mask, scale, causal_block)
        return xla_attention(q, k, v, mask, scale)
    if impl == "cudnn":
        return cudnn_attention(q, k, v, mask, scale)
    if impl == "splash":
        return splash_attention(q, k, v, mask, scale, segment_ids)
    raise ValueError(f"attention_impl must be 'xla', 'cudnn' or 'splash', got {impl!r}")
