"""The analytic FLOP counts of tools/flops.py against XLA's own count of the compiled
programs (a one-layer model, so XLA's per-loop-body count is the whole count; dims where
matmuls dominate, so elementwise work XLA also counts stays a few percent)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1v2_jax.models import KVCache, TextConfig, VisionConfig, VLMConfig, abstract_params
from r1v2_jax.tools.flops import (decode_step_cost, forward_flops, text_layer_matmul_params,
                                  train_step_flops, vision_layer_matmul_params)
from r1v2_jax.generate.decode import decode_step_stacked
from r1v2_jax.train.masks import merge_params, split_params
from r1v2_jax.train.steps import sequence_token_logps

CONFIG = VLMConfig(
    vision=VisionConfig(hidden_size=128, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=512, image_size=56, patch_size=7),
    text=TextConfig(vocab_size=2048, hidden_size=256, intermediate_size=1024, num_hidden_layers=1,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=64),
    image_token_id=7)
B, T = 2, 64


def _xla_flops(fn, *args) -> float:
    return float(jax.jit(fn).lower(*args).compile().cost_analysis()["flops"])


def _inputs():
    ids = np.full((B, T), 11, np.int32)
    ids[:, 1:1 + CONFIG.num_image_tokens] = CONFIG.image_token_id
    pixels = jax.ShapeDtypeStruct((B, 56, 56, 3), jnp.float32)
    return jnp.asarray(ids), pixels


def _loss(params, ids, pixels):
    return -jnp.sum(sequence_token_logps(CONFIG, params, ids, jnp.ones_like(ids), pixels,
                                         chunk_size=T))


def test_layer_parameter_counts_match_the_parameter_tree():
    shapes = abstract_params(CONFIG)
    kernels = lambda tree: sum(x.size for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]
                               if "kernel" in jax.tree_util.keystr(path))
    assert kernels(shapes["text"]["layers"]) == text_layer_matmul_params(CONFIG)
    assert kernels(shapes["vision"]["layers"]) == vision_layer_matmul_params(CONFIG)


def test_hand_computed_text_layer_flops():
    # q 256x256, k/v 256x128 each, o 256x256, MLP 3 x 256x1024 -> 983,040 weights.
    f = forward_flops(CONFIG, B, T, 0)
    assert f.text_layers == 2 * B * T * 983_040 + 4 * B * T * T * 4 * 64
    assert f.lm_head == 2 * B * (T - 1) * 256 * 2048 and f.vision == f.adapter == 0


def test_forward_flops_match_xla():
    ids, pixels = _inputs()
    ours = forward_flops(CONFIG, B, T, B).total
    xla = _xla_flops(lambda p, x: _loss(p, ids, x), abstract_params(CONFIG), pixels)
    assert ours <= xla <= 1.04 * ours, (ours, xla)


def test_causal_blocks_count_the_pairs_they_compute():
    """T = 40 in blocks of 16: 16*16 + 16*32 + 8*40 = 1088 pairs, not 1600; T <= one block,
    or another attention kernel: T^2. A text-only forward at T = 512 in blocks of 32
    (139,264 pairs instead of 262,144: the full count would be ~8% too high) matches XLA's."""
    from r1v2_jax.tools.flops import attention_pairs

    config = CONFIG.replace(causal_block=16)
    assert attention_pairs(config, 40) == 1088
    assert attention_pairs(config, 16) == 256
    assert attention_pairs(config.replace(attention_impl="cudnn"), 40) == 1600
    assert attention_pairs(config.replace(causal_block=0), 40) == 1600
    config, t = CONFIG.replace(causal_block=32), 512
    assert attention_pairs(config, t) == 32 * 32 * sum(range(1, 17))
    ids = jnp.full((B, t), 11, jnp.int32)
    loss = lambda p: -jnp.sum(sequence_token_logps(config, p, ids, jnp.ones_like(ids),
                                                   chunk_size=t))  # noqa: E731
    ours = forward_flops(config, B, t, 0).total
    xla = _xla_flops(loss, abstract_params(config))
    assert ours <= xla <= 1.04 * ours, (ours, xla)


@pytest.mark.parametrize("parts", [("vision", "adapter", "text"), ("adapter",), ("text", "adapter")])
def test_backward_flops_match_xla(parts):
    ids, pixels = _inputs()
    trainable, frozen = split_params(abstract_params(CONFIG), parts)
    grad = jax.grad(lambda t, f, x: _loss(merge_params(t, f), ids, x))
    ours = train_step_flops(CONFIG, B, T, B, parts).model
    xla = _xla_flops(grad, trainable, frozen, pixels)
    assert 0.98 * ours <= xla <= 1.04 * ours, (parts, ours, xla)


def test_remat_adds_one_forward_of_the_differentiated_layers():
    full = train_step_flops(CONFIG.replace(remat_policy="full"), B, T, B, ("text", "adapter"))
    f = forward_flops(CONFIG, B, T, B)
    assert full.hardware - full.model == pytest.approx(f.text_layers)


def test_decode_step_flops_match_xla():
    s = 128
    shape = (1, 8, s, 2, 64)
    cache = KVCache(jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct(shape, jnp.float32))
    row = jax.ShapeDtypeStruct((8,), jnp.int32)
    xla = _xla_flops(functools.partial(decode_step_stacked, CONFIG), abstract_params(CONFIG), cache, row,
                     row, jax.ShapeDtypeStruct((), jnp.int32),
                     jax.ShapeDtypeStruct((8, s), jnp.bool_))
    cost = decode_step_cost(CONFIG, 8, s, param_bytes=4, cache_bytes=4)
    assert cost.flops <= xla <= 1.04 * cost.flops, (cost.flops, xla)
    assert cost.cache_bytes == 2 * 8 * s * 2 * 64 * 4
