"""Qwen2 attention against a NumPy reference written loop by loop: the causal/padding/segment
mask, grouped-query attention (4 query heads on 2 KV heads), the 1/sqrt(D) scale, RoPE at
theta 5e5, the q/k/v biases, and the KV-cache write at `cache_index` (also under
attention_impl="splash", which decodes with the xla path)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import meta

from r1v2_jax.models import TextConfig, VLMConfig
from r1v2_jax.models.attention import attention, causal_mask
from r1v2_jax.models.qwen2 import Attention

HQ, HKV, D, E, THETA = 4, 2, 6, 5, 5e5  # D != Hq: a scale from the wrong axis shows


def mask_reference(q_slots, kv_valid, q_seg=None, kv_seg=None):
    b, t = q_slots.shape
    s = kv_valid.shape[1]
    out = np.zeros((b, t, s), bool)
    for i in range(b):
        for j in range(t):
            for k in range(s):
                same = q_seg is None or q_seg[i, j] == kv_seg[i, k]
                out[i, j, k] = k <= q_slots[i, j] and kv_valid[i, k] and same
    return out


def test_causal_mask():
    q_slots = np.array([[0, 1, 2, 3], [2, 3, 4, 5]])
    kv_valid = np.array([[1, 1, 1, 0, 1, 1], [0, 1, 1, 1, 1, 1]], bool)
    got = causal_mask(jnp.asarray(q_slots), jnp.asarray(kv_valid))
    np.testing.assert_array_equal(got, mask_reference(q_slots, kv_valid))
    seg = np.array([[1, 1, 2, 2], [1, 1, 1, 2]])
    q_seg, kv_seg = seg, np.concatenate([seg, seg[:, -1:], seg[:, -1:]], 1)
    got = causal_mask(jnp.asarray(q_slots), jnp.asarray(kv_valid), jnp.asarray(q_seg),
                      jnp.asarray(kv_seg))
    np.testing.assert_array_equal(got, mask_reference(q_slots, kv_valid, q_seg, kv_seg))


def attention_reference(q, k, v, mask, scale):
    """q [B, T, Hq, D], k/v [B, S, Hkv, D]; query head h reads KV head h // (Hq / Hkv)."""
    b, t, hq, d = q.shape
    g = hq // k.shape[2]
    out = np.zeros(q.shape)
    for i in range(b):
        for h in range(hq):
            logits = q[i, :, h] @ k[i, :, h // g].T * scale  # [T, S]
            logits = np.where(mask[i], logits, -np.inf)
            rows = np.isfinite(logits).any(-1)
            p = np.zeros_like(logits)
            p[rows] = np.exp(logits[rows] - logits[rows].max(-1, keepdims=True))
            p[rows] /= p[rows].sum(-1, keepdims=True)
            out[i, :, h] = p @ v[i, :, h // g]
    return out


def test_xla_attention_gqa_scale_and_masked_rows():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 3, HQ, D))
    k, v = rng.standard_normal((2, 5, HKV, D)), rng.standard_normal((2, 5, HKV, D))
    mask = mask_reference(np.array([[1, 2, 4], [0, 3, 4]]), np.array([[1, 1, 1, 1, 1],
                                                                      [1, 0, 1, 1, 0]], bool))
    mask[1, 0] = False  # a fully masked (padding) query row: finite, not NaN
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    got = np.asarray(attention(f32(q), f32(k), f32(v), jnp.asarray(mask)))
    rows = mask.any(-1)  # the padding row's value is unused (uniform over the keys)
    np.testing.assert_allclose(got[rows], attention_reference(q, k, v, mask, D ** -0.5)[rows],
                               atol=1e-5)
    assert np.isfinite(got).all()
    got = np.asarray(attention(f32(q), f32(k), f32(v), jnp.asarray(mask), scale=0.3))
    np.testing.assert_allclose(got[rows], attention_reference(q, k, v, mask, 0.3)[rows], atol=1e-5)
    with pytest.raises(ValueError) as err:
        attention(f32(q), f32(k), f32(v), None, impl="flash")
    assert str(err.value) == "attention_impl must be 'xla', 'cudnn' or 'splash', got 'flash'"


def rope_reference(x, positions):
    d = x.shape[-1]
    out = np.empty_like(x)
    for j in range(d // 2):
        angle = positions[:, :, None] * THETA ** (-2.0 * j / d)
        a, b = x[..., j], x[..., j + d // 2]
        out[..., j] = a * np.cos(angle) - b * np.sin(angle)
        out[..., j + d // 2] = b * np.cos(angle) + a * np.sin(angle)
    return out


def _config(impl="xla"):
    text = TextConfig(hidden_size=E, num_attention_heads=HQ, num_key_value_heads=HKV,
                      head_dim=D, rope_theta=THETA)
    return VLMConfig(text=text, attention_impl=impl)


@pytest.mark.parametrize("impl", ["xla", "splash"])
def test_attention_module_writes_the_cache_and_attends_over_it(impl):
    rng = np.random.default_rng(1)
    b, t, s, start = 2, 2, 6, 2
    h = rng.standard_normal((b, t, E)).astype(np.float32)
    positions = np.array([[5, 6], [2, 3]])  # RoPE positions differ from the cache slots
    cache_k = rng.standard_normal((b, s, HKV, D)).astype(np.float32)
    cache_v = rng.standard_normal((b, s, HKV, D)).astype(np.float32)
    kv_valid = np.array([[1, 1, 1, 1, 0, 0], [0, 1, 1, 1, 0, 0]], bool)
    mask = mask_reference(np.array([[2, 3], [2, 3]]), kv_valid)
    model = Attention(_config(impl))
    args = (jnp.asarray(h), jnp.asarray(positions), jnp.asarray(mask), None,
            jnp.asarray(cache_k), jnp.asarray(cache_v), start)
    params = meta.unbox(model.init(jax.random.key(0), *args))["params"]
    params = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)
    out, new_k, new_v = model.apply({"params": params}, *args)

    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    proj = lambda name: np.einsum("bte,ehd->bthd", h, p[name]["kernel"]) + p[name]["bias"]  # noqa: E731
    q, k, v = rope_reference(proj("q_proj"), positions), rope_reference(proj("k_proj"), positions), \
        proj("v_proj")
    ref_k, ref_v = cache_k.astype(np.float64), cache_v.astype(np.float64)
    ref_k[:, start:start + t], ref_v[:, start:start + t] = k, v
    np.testing.assert_allclose(new_k, ref_k, atol=1e-4)
    np.testing.assert_allclose(new_v, ref_v, atol=1e-4)
    att = attention_reference(q, ref_k, ref_v, mask, 1 / math.sqrt(D))
    expected = np.einsum("bthd,hde->bte", att, p["o_proj"]["kernel"])
    assert "bias" not in p["o_proj"]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_causal_blocks_skip_only_masked_keys():
    # T = 11: 4 blocks of 3 (the last block is short); left padding, two packed segments.
    rng = np.random.default_rng(3)
    t = 11
    q = rng.standard_normal((2, t, HQ, D))
    k, v = rng.standard_normal((2, t, HKV, D)), rng.standard_normal((2, t, HKV, D))
    valid = np.ones((2, t), bool)
    valid[0, :2] = False  # row 0 left-padded: its first two queries see no key
    seg = np.array([[1] * 6 + [2] * 5, [1] * 4 + [2] * 7])
    mask = mask_reference(np.tile(np.arange(t), (2, 1)), valid, seg, seg)
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    got = np.asarray(attention(f32(q), f32(k), f32(v), jnp.asarray(mask), causal_block=3))
    rows = mask.any(-1)
    assert rows.sum() == 2 * t - 2
    np.testing.assert_allclose(got[rows], attention_reference(q, k, v, mask, D ** -0.5)[rows],
                               atol=1e-5)
    assert np.isfinite(got).all()
    # One block of queries or fewer: the plain path runs, a padding query averages every key.
    short = attention(f32(q[:, :3]), f32(k[:, :3]), f32(v[:, :3]), jnp.asarray(mask[:, :3, :3]),
                      causal_block=4)
    np.testing.assert_allclose(np.asarray(short)[0, 0], v[0, :3].mean(0).repeat(2, 0), atol=1e-5)


def test_causal_blocks_gradient_equals_the_plain_softmax_gradient():
    """The blocked path's hand-written backward (P rebuilt from the saved row max and sum,
    dS = P * (dP - rowsum(dO * O))) against autodiff through the plain softmax path: GQA,
    left padding, two packed segments, 4 blocks (the last short). Padding queries' outputs
    are unused in a model, so their cotangent is 0 here; their scores must not leak
    gradient into q or k either (checked by a cotangent on them for dv only)."""
    from r1v2_jax.models.attention import xla_attention

    rng = np.random.default_rng(7)
    t = 11
    q, w = rng.standard_normal((2, 2, t, HQ, D)).astype(np.float32)
    k, v = rng.standard_normal((2, 2, t, HKV, D)).astype(np.float32)
    valid = np.ones((2, t), bool)
    valid[1, :3] = False
    seg = np.array([[1] * 5 + [2] * 6, [1] * 7 + [2] * 4])
    mask = jnp.asarray(mask_reference(np.tile(np.arange(t), (2, 1)), valid, seg, seg))
    w[1, :3] = 0.0  # padding queries: no cotangent
    scale = 0.7

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v) * w)

    blocked = jax.grad(loss(lambda q, k, v: attention(q, k, v, mask, scale=scale,
                                                      causal_block=3)), argnums=(0, 1, 2))
    plain = jax.grad(loss(lambda q, k, v: xla_attention(q, k, v, mask, scale)), argnums=(0, 1, 2))
    for name, got, want in zip("qkv", blocked(q, k, v), plain(q, k, v)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5,
                                   err_msg=f"d{name}")
    # A cotangent on a padding query: its output (a uniform average of its block's values)
    # reaches v only; q and k get nothing from it.
    w_pad = np.zeros_like(w)
    w_pad[1, 0] = 1.0
    dq, dk, dv = jax.grad(lambda q, k, v: jnp.sum(attention(q, k, v, mask, scale=scale,
                                                            causal_block=3) * w_pad),
                          argnums=(0, 1, 2))(q, k, v)
    assert not np.asarray(dq).any() and not np.asarray(dk).any()
    want_dv = np.zeros_like(v)
    want_dv[1, :3] = w_pad[1, 0].reshape(HKV, 2, D).sum(1) / 3  # 2 queries per KV head
    np.testing.assert_allclose(np.asarray(dv), want_dv, atol=1e-6)


def test_causal_blocks_start_above_one_block_and_need_self_attention():
    """T = 1 block + 1 runs the blocked path (a padding query averages the first block's
    values, not all 4), T = 1 block the plain one (every value); keys != queries is an error."""
    rng = np.random.default_rng(4)
    q = jnp.asarray(rng.standard_normal((1, 7, HQ, D)), jnp.float32)
    v = rng.standard_normal((1, 7, HKV, D)).astype(np.float32)
    valid = np.arange(7)[None] >= 1  # query 0 is padding: it sees no key
    mask = mask_reference(np.arange(7)[None], valid)
    # (7, 5): a block larger than the 4 query heads, so the test reads T, not the heads
    for t, block, seen in ((7, 3, 3), (4, 3, 3), (3, 3, 3), (7, 5, 5)):
        out = attention(q[:, :t], jnp.asarray(v[:, :t]), jnp.asarray(v[:, :t]),
                        jnp.asarray(mask[:, :t, :t]), causal_block=block)
        np.testing.assert_allclose(np.asarray(out)[0, 0], v[0, :seen].mean(0).repeat(2, 0),
                                   atol=1e-5, err_msg=f"T={t}")
    with pytest.raises(ValueError, match=r"^causal blocks need self-attention, got 7 queries, "
                                         r"6 keys$"):
        attention(q, jnp.asarray(v[:, :6]), jnp.asarray(v[:, :6]), None, causal_block=3)


def test_attention_module_uses_causal_blocks_without_a_cache_only():
    """config.causal_block = 2: 5 queries without a cache run the blocked path (the padding
    query 0 averages the first block's 2 values), 3 queries at cache slots the plain one
    (keys are the cache's 6 slots, not the queries' own tokens)."""
    import dataclasses

    rng = np.random.default_rng(6)
    cfg = dataclasses.replace(_config(), causal_block=2)
    model = Attention(cfg)
    h = jnp.asarray(rng.standard_normal((1, 5, E)), jnp.float32)
    pos = jnp.arange(5)[None]
    valid = np.arange(5)[None] >= 1
    mask = mask_reference(np.arange(5)[None], valid)
    params = meta.unbox(model.init(jax.random.key(0), h, pos, None, None, None, None, 0))["params"]
    params = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)
    out, _, _ = model.apply({"params": params}, h, pos, jnp.asarray(mask), None, None, None, 0)
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    v = np.einsum("bte,ehd->bthd", np.asarray(h), p["v_proj"]["kernel"]) + p["v_proj"]["bias"]
    pad = np.einsum("hd,hde->e", v[0, :2].mean(0).repeat(2, 0), p["o_proj"]["kernel"])
    np.testing.assert_allclose(np.asarray(out)[0, 0], pad, rtol=1e-4, atol=1e-4)

    cache = jnp.asarray(rng.standard_normal((1, 6, HKV, D)), jnp.float32)
    kv_valid = np.array([[1, 1, 1, 1, 1, 0]], bool)
    cmask = jnp.asarray(mask_reference(np.array([[2, 3, 4]]), kv_valid))
    args = (h[:, :3], pos[:, :3] + 2, cmask, None, cache, cache, 2)
    got, _, _ = model.apply({"params": params}, *args)
    plain, _, _ = Attention(_config()).apply({"params": params}, *args)
    np.testing.assert_allclose(np.asarray(got), np.asarray(plain), rtol=1e-6, atol=1e-6)


def test_attention_params_shard_by_the_default_rules():
    """Logical axis names of q/k/v/o meet the sharding rules: heads over `tensor`, the model
    width over `fsdp`, the head dim replicated; no name the rules do not know."""
    import flax.linen as nn
    from jax.sharding import PartitionSpec as P

    from r1v2_jax.sharding.rules import DEFAULT_RULES

    h, pos = jnp.zeros((1, 2, E)), jnp.zeros((1, 2), jnp.int32)
    boxed = Attention(_config()).init(jax.random.key(0), h, pos, None, None, None, None, 0)
    logical = nn.get_partition_spec(boxed["params"])
    names = {a for spec in jax.tree.leaves(logical, is_leaf=lambda x: isinstance(x, P)) for a in spec}
    assert names <= {name for name, _ in DEFAULT_RULES}
    specs = jax.tree.map(lambda s: nn.logical_to_mesh_axes(s, DEFAULT_RULES), logical,
                         is_leaf=lambda x: isinstance(x, P))
    qkv = {"kernel": P("fsdp", "tensor", None), "bias": P("tensor", None)}
    assert specs == {"q_proj": qkv, "k_proj": qkv, "v_proj": qkv,
                     "o_proj": {"kernel": P("tensor", None, "fsdp")}}


def test_dispatch_reaches_each_backend():
    """On CPU the cuDNN and splash backends fail in their own code, not in the dispatch."""
    q, k = jnp.zeros((1, 2, HQ, D)), jnp.zeros((1, 3, HKV, D))
    if jax.default_backend() == "cpu":
        with pytest.raises(RuntimeError, match="cuDNN"):
            attention(q, k, k, None, impl="cudnn")
    with pytest.raises(ValueError, match="splash attention serves causal self-attention"):
        attention(q, k, k, None, impl="splash")
