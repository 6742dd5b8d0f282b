"""Flax Linen modules of R1V2: InternViT, the mlp1 adapter, the Qwen2 LM and their composition."""

from r1v2_jax.models.config import TextConfig, VisionConfig, VLMConfig
from r1v2_jax.models.qwen2 import KVCache
from r1v2_jax.models.vlm import (VLM, VLMOutput, abstract_params, count_params, default_positions,
                                 init_params, lm_head_kernel)

__all__ = ["VLM", "VLMConfig", "VisionConfig", "TextConfig", "VLMOutput", "KVCache",
           "init_params", "lm_head_kernel", "abstract_params", "count_params", "default_positions"]
