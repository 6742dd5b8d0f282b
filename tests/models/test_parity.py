"""The Flax model computes what transformers' InternVLForConditionalGeneration computes
(fp32, eager attention, tiny random models built offline), part by part."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from r1v2_jax.convert import load_hf
from r1v2_jax.models import VLM
from r1v2_jax.models.adapter import pixel_shuffle
from tests.hf_fixtures import IMAGE_TOKEN_ID, make_tiny_hf

TOL = 1e-4


def _inputs(num_tiles, seed=0, image_size=28, patch_size=7):
    rng = np.random.default_rng(seed)
    per_tile = ((image_size // patch_size) // 2) ** 2
    ids = rng.integers(3, 99, size=(2, 8 + num_tiles * per_tile))
    # tiles split over the two rows of the batch, in order
    first = (num_tiles + 1) // 2
    ids[0, 2:2 + first * per_tile] = IMAGE_TOKEN_ID
    ids[1, 1:1 + (num_tiles - first) * per_tile] = IMAGE_TOKEN_ID
    pixels = rng.standard_normal((num_tiles, 3, image_size, image_size)).astype(np.float32)
    return ids, pixels


def _jax(config, params, ids, pixels, **kw):
    px = None if pixels is None else jnp.asarray(pixels.transpose(0, 2, 3, 1))
    return VLM(config).apply({"params": params}, jnp.asarray(ids), px, **kw)


@pytest.mark.parametrize("norm_type,qk_norm,qkv_bias,tie,kv_heads,layout,tiles", [
    ("rms_norm", True, False, False, 2, "hf", 1),        # the 6B variant's block
    ("layer_norm", False, True, False, 4, "hf", 3),      # the 300M variant, MHA
    ("rms_norm", True, True, True, 1, "original", 2),    # tied head, MQA, layout A
    ("layer_norm", False, False, True, 2, "original", 1),
])
def test_vlm_logits_match_transformers(tmp_path, norm_type, qk_norm, qkv_bias, tie, kv_heads,
                                       layout, tiles):
    path, model = make_tiny_hf(tmp_path, norm_type=norm_type, qk_norm=qk_norm, qkv_bias=qkv_bias,
                               tie=tie, num_kv_heads=kv_heads, layout=layout)
    config, params = load_hf(path)
    ids, pixels = _inputs(tiles)
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids), pixel_values=torch.tensor(pixels))
        feats = model.model.get_image_features(pixel_values=torch.tensor(pixels)).pooler_output
        vit = model.model.vision_tower(pixel_values=torch.tensor(pixels)).last_hidden_state[:, 1:]
    out = _jax(config, params, ids, pixels)
    np.testing.assert_allclose(np.asarray(out.logits), ref.logits.numpy(), atol=TOL, rtol=0)
    px = jnp.asarray(pixels.transpose(0, 2, 3, 1))
    jvit = VLM(config).apply({"params": params}, px, method=lambda m, x: m.vision(x))
    np.testing.assert_allclose(np.asarray(jvit), vit.numpy(), atol=TOL, rtol=0)
    jfeat = VLM(config).apply({"params": params}, px, method=VLM.image_features)
    np.testing.assert_allclose(np.asarray(jfeat), feats.numpy(), atol=TOL, rtol=0)


def test_text_only_padded_batch_matches_transformers(tmp_path):
    path, model = make_tiny_hf(tmp_path)
    config, params = load_hf(path)
    rng = np.random.default_rng(1)
    ids = rng.integers(3, 99, size=(3, 10))
    mask = np.ones_like(ids)
    mask[0, :4] = 0  # left padding
    mask[2, 7:] = 0  # right padding
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    out = np.asarray(_jax(config, params, ids, None, attention_mask=jnp.asarray(mask)).logits)
    valid = mask.astype(bool)
    np.testing.assert_allclose(out[valid], ref[valid], atol=TOL, rtol=0)


def _reference_pixel_shuffle(x, scale, version):
    """InternVL's pixel_shuffle, in torch, as published."""
    n, w, h, c = x.size()
    x = x.view(n, w, int(h * scale), int(c / scale))
    x = x.permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(h * scale), int(w * scale), int(c / (scale * scale)))
    if version != "v1":
        x = x.permute(0, 2, 1, 3).contiguous()
    return x


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_pixel_shuffle_matches_internvl(version):
    x = np.random.default_rng(0).standard_normal((2, 6, 6, 5)).astype(np.float32)
    ref = _reference_pixel_shuffle(torch.tensor(x), 0.5, version).numpy()
    np.testing.assert_array_equal(np.asarray(pixel_shuffle(jnp.asarray(x), 0.5, version)), ref)
    if version == "v1":  # v1 really differs from v2 (the test would catch a swapped flag)
        assert not np.array_equal(ref, _reference_pixel_shuffle(torch.tensor(x), 0.5, "v2").numpy())
