"""Shared tiny random model and prompt builders for the generation tests."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from r1v2_jax.models import TextConfig, VisionConfig, VLMConfig, abstract_params

IMAGE_ID = 63  # <IMG_CONTEXT> of the tiny config
TOKENS_PER_TILE = 4  # (28 / 7 * 0.5)^2


@pytest.fixture(scope="session")
def tiny():
    return tiny_model()


def tiny_config() -> VLMConfig:
    return VLMConfig(
        vision=VisionConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, image_size=28, patch_size=7),
        text=TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=8, rope_theta=10000.0),
        image_token_id=IMAGE_ID)


def random_params(config: VLMConfig, seed: int = 0, head_std: float = 0.4):
    """Random parameters drawn with NumPy on the model's own shapes (no compilation):
    norm scales ~1, everything else N(0, 0.1^2); the LM head's larger scale makes the
    next-token distributions far from uniform, so sampling choices matter."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        if name.endswith("scale"):
            return (1.0 + 0.1 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)
        std = head_std if "lm_head" in name else 0.1
        return (std * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, abstract_params(config))


def tiny_model():
    """(config, params) of a small random VLM."""
    config = tiny_config()
    return config, jax.device_put(random_params(config))


def random_prompts(lengths, *, seed=0, image_at=None, width=None, side="left", filler=0):
    """Token rows of the given lengths padded to `width` on `side`; returns (ids, mask).

    image_at: rows that get one tile's placeholders (after their first two tokens).
    Padding slots hold `filler` (tests pass IMAGE_ID to prove padding is ignored).
    """
    rng = np.random.default_rng(seed)
    width = width or max(lengths)
    ids = np.full((len(lengths), width), filler, np.int64)
    mask = np.zeros_like(ids)
    for b, n in enumerate(lengths):
        row = list(rng.integers(1, IMAGE_ID, n))
        if image_at is not None and b in image_at:
            row[2:2 + TOKENS_PER_TILE] = [IMAGE_ID] * TOKENS_PER_TILE
        cols = slice(width - n, width) if side == "left" else slice(0, n)
        ids[b, cols] = row
        mask[b, cols] = 1
    return ids, mask


def repad(ids, mask, side, filler=0):
    """The same rows padded on the other side."""
    out_ids, out_mask = np.full_like(ids, filler), np.zeros_like(mask)
    w = ids.shape[1]
    for b in range(ids.shape[0]):
        real = ids[b][mask[b] == 1]
        cols = slice(w - len(real), w) if side == "left" else slice(0, len(real))
        out_ids[b, cols], out_mask[b, cols] = real, 1
    return out_ids, out_mask


def pixels(tiles, seed=0):
    return np.random.default_rng(seed).standard_normal((tiles, 28, 28, 3)).astype(np.float32)
