"""Model configuration: frozen, hashable dataclasses (usable as static jit arguments).

The field names follow the InternVL remote-code config (layout A) where one exists; the
converter (`r1v2_jax.convert.hf_config`) maps both Hugging Face layouts onto these.
Runtime choices that do not change the parameters (dtypes, attention implementation,
remat policy, scan) live here too so that a config fully determines the computation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """InternViT. Defaults are the 6B variant of R1V2."""

    hidden_size: int = 3200
    num_hidden_layers: int = 45
    num_attention_heads: int = 25
    intermediate_size: int = 12800
    image_size: int = 448
    patch_size: int = 14
    num_channels: int = 3
    qkv_bias: bool = False
    qk_normalization: bool = True
    norm_type: str = "rms_norm"  # "rms_norm" | "layer_norm"
    layer_norm_eps: float = 1e-6
    qk_norm_eps: float = 1e-6  # fixed in both reference implementations

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_patches_per_side(self) -> int:
        return self.image_size // self.patch_size


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """Qwen2 decoder. Defaults are QwQ-32B as used by R1V2."""

    vocab_size: int = 152064
    hidden_size: int = 5120
    intermediate_size: int = 27648
    num_hidden_layers: int = 64
    num_attention_heads: int = 40
    num_key_value_heads: int = 8
    head_dim: int = 128
    rms_norm_eps: float = 1e-5
    rope_theta: float = 1e6
    max_position_embeddings: int = 40960
    tie_word_embeddings: bool = False
    bos_token_id: int = 151643
    eos_token_id: int = 151645


@dataclasses.dataclass(frozen=True)
class VLMConfig:
    """The whole R1V2 model plus the runtime choices of how to compute it."""

    vision: VisionConfig = VisionConfig()
    text: TextConfig = TextConfig()
    downsample_ratio: float = 0.5
    ps_version: str = "v2"
    select_layer: int = -1
    projector_layer_norm_eps: float = 1e-5
    image_token_id: int = 151667  # <IMG_CONTEXT>; set from the tokenizer
    # Preprocessing facts carried with the checkpoint (used by the data pipeline).
    force_image_size: int = 448
    dynamic_image_size: bool = True
    use_thumbnail: bool = True
    min_dynamic_patch: int = 1
    max_dynamic_patch: int = 12
    template: str = "skywork-r1v-chat"
    # Runtime (not part of the checkpoint's tensors).
    param_dtype: str = "float32"
    dtype: str = "float32"  # compute dtype of matmuls; norms/softmax/log-probs are fp32
    attention_impl: str = "xla"  # "xla" | "cudnn" | "splash"
    remat_policy: str = "none"  # "none" | "full" | "dots" | "dots_with_no_batch_dims"
    # xla attention without a KV cache, sequences longer than one block: each block of this
    # many queries attends to the keys up to its end only. The masked upper triangle is
    # skipped and each block's [T_blk, S] scores stay in cache: attention fwd + bwd 2-3.5x
    # faster on CPU at 64 than unblocked (docs/benchmarks.md). Compile time grows with the
    # number of blocks (they are unrolled): 64 suits CPU up to a few thousand tokens. 0 = off.
    causal_block: int = 64

    @property
    def num_image_tokens(self) -> int:
        """<IMG_CONTEXT> tokens per 448 tile: (448/14)^2 * r^2."""
        side = int(self.vision.num_patches_per_side * self.downsample_ratio)
        return side * side

    @property
    def jnp_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def jnp_param_dtype(self):
        return jnp.dtype(self.param_dtype)

    def replace(self, **kw) -> "VLMConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VLMConfig":
        """Builds a config from a (possibly nested, possibly ml_collections) mapping.

        Unknown keys are an error naming the key, so a typo in a config file never passes
        silently.
        """
        d = dict(d)
        vision = _build(VisionConfig, d.pop("vision", {}), "vision")
        text = _build(TextConfig, d.pop("text", {}), "text")
        return _build(cls, d, "model", vision=vision, text=text)


def _build(klass, values: Mapping[str, Any], where: str, **extra):
    names = {f.name for f in dataclasses.fields(klass)}
    values = dict(values)
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {where} config field(s) {unknown}; known: {sorted(names)}")
    return klass(**values, **extra)
