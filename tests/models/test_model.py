"""Model properties that need no reference: the 38B parameter count, the KV-cache path,
position-embedding resizing and select_layer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from r1v2_jax.models import KVCache, VLM, VLMConfig, count_params, init_params
from r1v2_jax.models.vit import num_active_layers, resize_position_embedding
from r1v2_jax.train.config_loader import load_config_file


def test_38b_parameter_count_from_shapes_only():
    counts = count_params(VLMConfig())
    assert counts["total"] == 38_392_158_592  # 38.39B, tensor-exact
    assert counts["vision"] == 5_536_496_000
    assert counts["adapter"] == 91_786_240
    assert counts["text"] == 32_763_876_352


def test_38b_config_file_equals_spec_defaults():
    cfg = VLMConfig.from_dict(load_config_file("configs/r1v2_38b.py").model)
    assert cfg.replace(param_dtype="float32", dtype="float32", remat_policy="none",
                       causal_block=VLMConfig().causal_block) == VLMConfig()


def _tiny():
    return VLMConfig.from_dict(load_config_file("configs/tiny.py").model)


def test_kv_cache_decode_equals_full_forward():
    config = _tiny()
    params = init_params(config, jax.random.key(0))
    ids = jax.random.randint(jax.random.key(1), (2, 9), 6, 128)
    full = VLM(config).apply({"params": params}, ids).logits
    cache = KVCache.init(config, 2, 12)
    kv_mask = jnp.zeros((2, 12), bool)
    outs = []
    # prefill 5 tokens, then decode one at a time
    kv_mask = kv_mask.at[:, :5].set(True)
    pos = jnp.broadcast_to(jnp.arange(5), (2, 5))
    o = VLM(config).apply({"params": params}, ids[:, :5], positions=pos, cache=cache,
                          cache_index=0, kv_mask=kv_mask)
    outs.append(o.logits)
    cache = o.cache
    for t in range(5, 9):
        kv_mask = kv_mask.at[:, t].set(True)
        o = VLM(config).apply({"params": params}, ids[:, t:t + 1],
                              positions=jnp.full((2, 1), t), cache=cache, cache_index=t,
                              kv_mask=kv_mask)
        outs.append(o.logits)
        cache = o.cache
    np.testing.assert_allclose(np.asarray(jnp.concatenate(outs, 1)), np.asarray(full), atol=1e-5)


def test_position_embedding_resize_matches_torch_bicubic():
    pos = np.random.default_rng(0).standard_normal((1 + 16, 8)).astype(np.float32)
    grid = pos[1:].reshape(1, 4, 4, 8).transpose(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(torch.tensor(grid), size=(6, 6), mode="bicubic",
                                          align_corners=False)
    ref = ref.numpy().transpose(0, 2, 3, 1).reshape(36, 8)
    out = np.asarray(resize_position_embedding(jnp.asarray(pos), 6))
    np.testing.assert_allclose(out[1:], ref, atol=1e-5)
    np.testing.assert_array_equal(out[0], pos[0])


def test_select_layer_counts_and_effect():
    assert num_active_layers(45, -1) == 45 and num_active_layers(45, -2) == 44
    assert num_active_layers(45, 3) == 3
    with pytest.raises(ValueError, match="select_layer"):
        num_active_layers(4, -6)
    config = _tiny()
    params = init_params(config, jax.random.key(0))
    px = jax.random.normal(jax.random.key(2), (1, 28, 28, 3))
    last = VLM(config).apply({"params": params}, px, method=VLM.image_features)
    second = VLM(config.replace(select_layer=-2)).apply({"params": params}, px,
                                                       method=VLM.image_features)
    assert not np.allclose(np.asarray(last), np.asarray(second))
