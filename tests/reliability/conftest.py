"""A tiny random checkpoint in both forms (HF safetensors, JAX folder), built without torch."""

from __future__ import annotations

import numpy as np
import pytest

from r1v2_jax.convert import convert_to_jax, save_hf
from r1v2_jax.models import TextConfig, VisionConfig, VLMConfig


def tiny_config(vocab_size: int = 96, image_token_id: int = 63) -> VLMConfig:
    # more layers than the other fixtures: the write phase of a conversion lasts long
    # enough (~1 s with 4 KB chunks) for a signal to land in the middle of it
    return VLMConfig(
        vision=VisionConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                            intermediate_size=48, image_size=28, patch_size=7),
        text=TextConfig(vocab_size=vocab_size, hidden_size=48, intermediate_size=80,
                        num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=12, max_position_embeddings=256),
        image_token_id=image_token_id, force_image_size=28, max_dynamic_patch=2)


def random_tree(config: VLMConfig, seed: int = 3) -> dict:
    from r1v2_jax.models import abstract_params
    import jax

    rng = np.random.default_rng(seed)
    shapes = abstract_params(config)
    return jax.tree.map(lambda a: (0.2 * rng.standard_normal(a.shape)).astype(np.float32), shapes)


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    """(HF folder, its reference JAX conversion folder)."""
    root = tmp_path_factory.mktemp("tiny")
    config = tiny_config()
    hf = save_hf(config, random_tree(config), root / "hf", layout="hf", shard_size="60KB")
    ref = convert_to_jax(hf, root / "ref-jax", dtype="float32", max_chunk_bytes=4000)
    return hf, ref
