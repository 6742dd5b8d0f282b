"""The "mlp1" adapter: pixel shuffle, then LayerNorm -> Linear -> GELU -> Linear."""

from __future__ import annotations

import flax.linen as nn
import jax

from r1v2_jax.models.config import VLMConfig
from r1v2_jax.models.layers import Dense, LayerNorm, gelu_exact


def pixel_shuffle(x: jax.Array, ratio: float, ps_version: str) -> jax.Array:
    """[N, W, H, C] -> [N, H*r, W*r, C/r^2] exactly as InternVL's `pixel_shuffle`.

    "v2" ends with a transpose of the two spatial axes; "v1" (legacy) does not.
    """
    if ps_version not in ("v1", "v2"):
        raise ValueError(f"ps_version must be 'v1' or 'v2', got {ps_version!r}")
    n, w, h, c = x.shape
    inv = round(1 / ratio)
    if h % inv or w % inv:
        raise ValueError(f"feature grid {w}x{h} is not divisible by 1/downsample_ratio={inv}")
    x = x.reshape(n, w, h // inv, c * inv)
    x = x.transpose(0, 2, 1, 3)
    x = x.reshape(n, h // inv, w // inv, c * inv * inv)
    if ps_version == "v2":
        x = x.transpose(0, 2, 1, 3)
    return x


class Adapter(nn.Module):
    """Vision features [N, P, C] -> LM embeddings [N, P*r^2, E]."""

    config: VLMConfig

    @nn.compact
    def __call__(self, features):
        cfg = self.config
        dtype, pdtype = cfg.jnp_dtype, cfg.jnp_param_dtype
        n, p, c = features.shape
        side = int(round(p ** 0.5))
        x = pixel_shuffle(features.reshape(n, side, side, c), cfg.downsample_ratio, cfg.ps_version)
        x = x.reshape(n, -1, x.shape[-1])
        e = cfg.text.hidden_size
        x = LayerNorm(cfg.projector_layer_norm_eps, dtype, pdtype, "adapter_in", name="norm")(x)
        x = Dense((e,), ("adapter_in",), ("embed",), True, dtype, pdtype, name="fc1")(x)
        x = gelu_exact(x)
        return Dense((e,), ("embed",), ("embed_out",), True, dtype, pdtype, name="fc2")(x)
