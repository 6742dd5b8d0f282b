"""Attention implementations: the XLA path against jax.nn.dot_product_attention and a
naive loop reference (GQA, masks, fully-masked rows); the cuDNN path's argument
conventions; the splash path lowered for TPU; the planning stand-in for flash kernels.

cuDNN and splash kernels cannot run here (no GPU / TPU): cuDNN is checked by routing the
exact same call to jax.nn's XLA implementation, splash by lowering it for TPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1v2_jax.models import attention as attn
from r1v2_jax.tools.blockwise_attention import blockwise_attention


def naive_attention(q, k, v, mask, scale):
    """Loops over batch, head and query: softmax over the visible keys; a row that sees
    no key averages all values (uniform weights), as a finite -inf substitute implies."""
    q, k, v, mask = (np.asarray(x, np.float64) for x in (q, k, v, mask))
    b, t, hq, d = q.shape
    group = hq // k.shape[2]
    out = np.zeros((b, t, hq, d))
    for i in range(b):
        for h in range(hq):
            kh, vh = k[i, :, h // group], v[i, :, h // group]
            for j in range(t):
                visible = mask[i, j] > 0
                if not visible.any():
                    out[i, j, h] = vh.mean(0)
                    continue
                logits = kh[visible] @ q[i, j, h] * scale
                w = np.exp(logits - logits.max())
                out[i, j, h] = (w / w.sum()) @ vh[visible]
    return out


def _inputs(hq=8, hkv=2, t=6, s=9, seed=0):
    r = np.random.default_rng(seed)
    q = jnp.asarray(r.normal(size=(2, t, hq, 16)), jnp.float32)
    k = jnp.asarray(r.normal(size=(2, s, hkv, 16)), jnp.float32)
    v = jnp.asarray(r.normal(size=(2, s, hkv, 16)), jnp.float32)
    kv_valid = jnp.asarray(r.random((2, s)) > 0.3).at[:, 0].set(True)
    mask = attn.causal_mask(jnp.broadcast_to(jnp.arange(t) + s - t, (2, t)), kv_valid)
    mask = mask.at[1, 2].set(False)  # one fully-masked query row
    return q, k, v, mask


@pytest.mark.parametrize("hq, hkv", [(8, 2), (4, 4), (6, 1)])
def test_xla_path_equals_naive_and_jax_nn(hq, hkv):
    q, k, v, mask = _inputs(hq, hkv)
    scale = 16 ** -0.5
    ours = attn.attention(q, k, v, mask, impl="xla")
    np.testing.assert_allclose(ours, naive_attention(q, k, v, mask, scale), rtol=1e-5, atol=1e-5)
    ref = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], scale=scale,
                                       implementation="xla")
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_fully_masked_row_is_finite_mean_of_values():
    q, k, v, mask = _inputs()
    out = np.asarray(attn.attention(q, k, v, mask, impl="xla"))
    assert np.isfinite(out).all()
    expected = np.repeat(np.asarray(v[1]).mean(0), 4, axis=0)  # 8 q heads over 2 kv heads
    np.testing.assert_allclose(out[1, 2], expected, rtol=1e-5, atol=1e-6)


def test_no_mask_is_full_attention():
    q, k, v, _ = _inputs()
    full = np.ones((2, 6, 9), bool)
    np.testing.assert_allclose(attn.attention(q, k, v, None), attn.attention(q, k, v, full),
                               rtol=1e-6, atol=1e-6)


def test_cudnn_path_conventions(monkeypatch):
    """Same call as the cuDNN path, with the kernel swapped for jax.nn's XLA one: the mask
    layout, GQA layout and scale passed to jax.nn are right."""
    calls = []
    real = jax.nn.dot_product_attention

    def routed(*args, implementation=None, **kwargs):
        calls.append(implementation)
        return real(*args, implementation="xla", **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", routed)
    q, k, v, mask = _inputs()
    out = attn.attention(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16),
                         v.astype(jnp.bfloat16), mask, impl="cudnn")
    assert calls == ["cudnn"] and out.dtype == jnp.bfloat16
    ref = attn.attention(q, k, v, mask, impl="xla")
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=3e-2, atol=3e-2)


def test_splash_path_lowers_for_tpu():
    q = jax.ShapeDtypeStruct((2, 256, 8, 128), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((2, 256, 2, 128), jnp.bfloat16)
    seg = jax.ShapeDtypeStruct((2, 256), jnp.int32)
    fn = jax.jit(lambda q, k, v, s: attn.attention(q, k, v, None, impl="splash", segment_ids=s))
    traced = fn.trace(q, kv, kv, seg)
    assert traced.out_info.shape == (2, 256, 8, 128)
    text = traced.lower(lowering_platforms=("tpu",)).as_text()
    assert "tpu_custom_call" in text  # the Mosaic kernel, not an XLA fallback


def test_splash_rejects_cached_decoding():
    q = jnp.zeros((1, 1, 2, 128), jnp.bfloat16)
    kv = jnp.zeros((1, 8, 2, 128), jnp.bfloat16)
    with pytest.raises(ValueError, match="use attention_impl='xla' for decoding"):
        attn.attention(q, kv, kv, None, impl="splash")


def test_unknown_implementation_is_an_error():
    q, k, v, mask = _inputs()
    with pytest.raises(ValueError, match="attention_impl must be"):
        attn.attention(q, k, v, mask, impl="flash")


@pytest.mark.parametrize("t, block", [(6, 4), (6, 6), (5, 2)])
def test_blockwise_stand_in_equals_xla_path(t, block):
    q, k, v, mask = _inputs(t=t)
    scale = 16 ** -0.5
    np.testing.assert_allclose(blockwise_attention(q, k, v, mask, scale, block=block),
                               attn.xla_attention(q, k, v, mask, scale), rtol=1e-6, atol=1e-6)
    grad = lambda f: jax.grad(lambda q: jnp.sum(f(q, k, v, mask, scale) ** 2))(q)
    np.testing.assert_allclose(grad(lambda *a: blockwise_attention(*a, block=block)),
                               grad(attn.xla_attention), rtol=1e-5, atol=1e-5)


def test_flash_memory_model_swaps_and_restores():
    from r1v2_jax.tools.blockwise_attention import flash_memory_model

    exact = attn.xla_attention
    q, k, v, mask = _inputs(t=6)
    with flash_memory_model(block=4):
        assert attn.xla_attention is not exact
        inside = attn.attention(q, k, v, mask)
    assert attn.xla_attention is exact
    np.testing.assert_allclose(inside, exact(q, k, v, mask, 16 ** -0.5), rtol=1e-6, atol=1e-6)
