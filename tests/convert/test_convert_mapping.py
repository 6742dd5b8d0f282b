"""The tensor mapping: exact JAX tree of docs/PARAMS.md, and transforms that invert exactly."""

import dataclasses

import numpy as np
import pytest

from r1v2_jax.convert.mapping import flatten, leaf_shapes, rules_for, unflatten
from r1v2_jax.models.config import TextConfig, VisionConfig, VLMConfig


def _tiny(**vision):
    return VLMConfig(vision=VisionConfig(hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=16, image_size=28, patch_size=7,
                                         **vision),
                     text=TextConfig(vocab_size=20, hidden_size=12, intermediate_size=24,
                                     num_hidden_layers=3, num_attention_heads=3,
                                     num_key_value_heads=1, head_dim=4),
                     image_token_id=5)


@pytest.mark.parametrize("vision", [{}, dict(norm_type="layer_norm", qkv_bias=True,
                                             qk_normalization=False)])
@pytest.mark.parametrize("tie", [False, True])
def test_leaf_shapes_match_the_flax_model(vision, tie):
    from r1v2_jax.models import abstract_params

    config = _tiny(**vision)
    config = config.replace(text=dataclasses.replace(config.text, tie_word_embeddings=tie))
    model = {k: tuple(v.shape) for k, v in flatten(abstract_params(config)).items()}
    assert model == leaf_shapes(config)


def test_fused_qkv_rows_are_q_then_k_then_v_with_heads_contiguous():
    config = _tiny()
    rule = next(r for r in rules_for(config, "original") if r.hf_key.endswith("attn.qkv.weight"))
    c, h, d = 8, 2, 4
    w = np.arange(3 * c * c, dtype=np.float32).reshape(3 * c, c)  # [out, in]
    q, k, v = rule.to_jax(w)
    assert q.shape == (c, h, d)
    # kernel[in, head, dim] = W[row = head * d + dim, in] of the q block, and so on.
    assert q[3, 1, 2] == w[1 * d + 2, 3]
    assert k[5, 0, 1] == w[c + 0 * d + 1, 5]
    assert v[7, 1, 3] == w[2 * c + 1 * d + 3, 7]
    np.testing.assert_array_equal(rule.to_hf([q, k, v]), w)


def test_conv_and_out_projection_layouts():
    config = _tiny()
    rules = {r.hf_key: r for r in rules_for(config, "hf")}
    conv = rules["vision_tower.embeddings.patch_embeddings.projection.weight"]
    w = np.random.default_rng(0).standard_normal((8, 3, 7, 7)).astype(np.float32)
    (kernel,) = conv.to_jax(w)
    assert kernel.shape == (7, 7, 3, 8) and kernel[2, 5, 1, 6] == w[6, 1, 2, 5]  # HWIO
    o = rules["language_model.model.layers.{i}.self_attn.o_proj.weight"]
    w = np.random.default_rng(1).standard_normal((12, 12)).astype(np.float32)  # [E, Hq*D]
    (kernel,) = o.to_jax(w)
    assert kernel.shape == (3, 4, 12) and kernel[2, 1, 7] == w[7, 2 * 4 + 1]


@pytest.mark.parametrize("layout", ["hf", "original"])
def test_every_rule_round_trips_bit_exactly(layout):
    config = _tiny(norm_type="layer_norm", qkv_bias=True)
    rng = np.random.default_rng(0)
    for rule in rules_for(config, layout):
        w = rng.standard_normal(rule.hf_shape).astype(np.float32)
        pieces = rule.to_jax(w)
        assert [p.shape for p in pieces] == list(rule.leaf_shapes)
        assert all(p.flags.c_contiguous for p in pieces)
        back = rule.to_hf(pieces)
        assert back.dtype == w.dtype and np.array_equal(back, w), rule.hf_key


def test_flatten_unflatten_inverse():
    tree = {"a": {"b": 1, "c": {"d": 2}}, "e": 3}
    assert flatten(tree) == {("a", "b"): 1, ("a", "c", "d"): 2, ("e",): 3}
    assert unflatten(flatten(tree)) == tree
