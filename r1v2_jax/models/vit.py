"""InternViT: the vision encoder (6B with RMSNorm + qk-norm, or 300M with LayerNorm).

pixel_values [N, H, W, 3] (normalised, channels last) -> features [N, (H/p)*(W/p), C]
taken from layer `select_layer` with the CLS token dropped.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1v2_jax.models.attention import attention
from r1v2_jax.models.config import VLMConfig
from r1v2_jax.models.layers import (Dense, as_rows, gelu_exact, make_norm, param_with_axes,
                                    scan_layers)


def resize_position_embedding(pos: jax.Array, grid: int) -> jax.Array:
    """Bicubic resize of the patch position embeddings [1 + g*g, C] to a grid x grid layout.

    Matches PyTorch `F.interpolate(mode="bicubic", align_corners=False)` (a=-0.75 Keys
    kernel, half-pixel centres) as both references use; the CLS row is kept as is.
    """
    cls, patches = pos[:1], pos[1:]
    old = int(round(patches.shape[0] ** 0.5))
    if old == grid:
        return pos
    grid_in = patches.reshape(old, old, -1).astype(jnp.float32)
    weights_h = _bicubic_matrix(old, grid)
    out = jnp.einsum("ih,jw,hwc->ijc", weights_h, weights_h, grid_in)
    return jnp.concatenate([cls, out.reshape(grid * grid, -1).astype(pos.dtype)], axis=0)


def _bicubic_matrix(n_in: int, n_out: int, a: float = -0.75) -> jax.Array:
    """[n_out, n_in] interpolation matrix of PyTorch's bicubic (border-clamped taps)."""
    import numpy as np

    scale = n_in / n_out
    m = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        x = (i + 0.5) * scale - 0.5
        x0 = int(np.floor(x))
        t = x - x0
        for k in range(-1, 3):
            d = abs(t - k)
            if d <= 1:
                w = (a + 2) * d**3 - (a + 3) * d**2 + 1
            elif d < 2:
                w = a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
            else:
                w = 0.0
            m[i, min(max(x0 + k, 0), n_in - 1)] += w
    return jnp.asarray(m, jnp.float32)


class VisionEmbeddings(nn.Module):
    config: VLMConfig

    @nn.compact
    def __call__(self, pixel_values):
        vc, dtype, pdtype = self.config.vision, self.config.jnp_dtype, self.config.jnp_param_dtype
        c, p = vc.hidden_size, vc.patch_size
        patches = PatchEmbed(c, p, dtype, pdtype, name="patch_embedding")(pixel_values)
        n, gh, gw, _ = patches.shape
        if gh != gw:
            raise ValueError(f"tiles must be square, got {gh}x{gw} patches")
        patches = patches.reshape(n, gh * gw, c)
        cls = param_with_axes(self, "class_embedding", nn.initializers.normal(0.02), (c,), pdtype,
                              ("vit_embed",))
        num_pos = vc.num_patches_per_side**2 + 1
        pos = param_with_axes(self, "position_embedding", nn.initializers.normal(0.02),
                              (num_pos, c), pdtype, (None, "vit_embed"))
        pos = resize_position_embedding(pos, gh).astype(dtype)
        cls = jnp.broadcast_to(cls.astype(dtype)[None, None], (n, 1, c))
        return jnp.concatenate([cls, patches.astype(dtype)], axis=1) + pos[None]


class PatchEmbed(nn.Module):
    """Conv 14x14 stride 14 as a matmul over flattened patches (same maths, faster on CPU)."""

    features: int
    patch: int
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        p = self.patch
        kernel = param_with_axes(self, "kernel", nn.initializers.lecun_normal(),
                                 (p, p, x.shape[-1], self.features), self.param_dtype,
                                 (None, None, None, "vit_embed"))
        bias = param_with_axes(self, "bias", nn.initializers.zeros, (self.features,),
                               self.param_dtype, ("vit_embed",))
        n, h, w, ch = x.shape
        x = x.reshape(n, h // p, p, w // p, p, ch).transpose(0, 1, 3, 2, 4, 5)
        x = x.reshape(-1, p * p * ch).astype(self.dtype)  # 2-D, as `Dense` and `as_rows`
        y = x @ kernel.reshape(p * p * ch, self.features).astype(self.dtype) + bias.astype(self.dtype)
        return y.reshape(n, h // p, w // p, self.features)


class VisionAttention(nn.Module):
    config: VLMConfig

    @nn.compact
    def __call__(self, x):
        vc, dtype, pdtype = self.config.vision, self.config.jnp_dtype, self.config.jnp_param_dtype
        h, d = vc.num_attention_heads, vc.head_dim

        def proj(name):
            return Dense((h, d), ("vit_embed",), ("vit_heads", "vit_kv"), vc.qkv_bias, dtype, pdtype,
                         name=name)

        q, k, v = proj("q")(x), proj("k")(x), proj("v")(x)
        if vc.qk_normalization:
            # One RMSNorm over all heads (flattened), before the head split.
            shape = q.shape
            q = make_norm("rms_norm", vc.qk_norm_eps, dtype, pdtype, "vit_embed", "q_norm")(
                q.reshape(shape[:-2] + (h * d,))).reshape(shape)
            k = make_norm("rms_norm", vc.qk_norm_eps, dtype, pdtype, "vit_embed", "k_norm")(
                k.reshape(shape[:-2] + (h * d,))).reshape(shape)
        out = attention(q, k, v, None, impl="xla" if self.config.attention_impl == "splash"
                        else self.config.attention_impl)
        return Dense((vc.hidden_size,), ("vit_heads", "vit_kv"), ("vit_embed",), True, dtype, pdtype,
                     name="proj")(out)


class VisionLayer(nn.Module):
    config: VLMConfig

    @nn.compact
    def __call__(self, x, active):
        vc, dtype, pdtype = self.config.vision, self.config.jnp_dtype, self.config.jnp_param_dtype
        norm = lambda name: make_norm(vc.norm_type, vc.layer_norm_eps, dtype, pdtype, "vit_embed", name)
        ls1 = param_with_axes(self, "ls1", nn.initializers.constant(0.1), (vc.hidden_size,), pdtype,
                              ("vit_embed",))
        ls2 = param_with_axes(self, "ls2", nn.initializers.constant(0.1), (vc.hidden_size,), pdtype,
                              ("vit_embed",))
        attn = VisionAttention(self.config, name="attn")(norm("norm1")(x))
        y = x + as_rows(lambda rows: ls1.astype(dtype) * rows, attn)
        h = VisionMLP(self.config, name="mlp")(norm("norm2")(y))
        y = y + as_rows(lambda rows: ls2.astype(dtype) * rows, h)
        # Layers past `select_layer` are carried through unchanged.
        return jnp.where(active, y, x), None


class VisionMLP(nn.Module):
    config: VLMConfig

    @nn.compact
    def __call__(self, x):
        vc, dtype, pdtype = self.config.vision, self.config.jnp_dtype, self.config.jnp_param_dtype
        x = Dense((vc.intermediate_size,), ("vit_embed",), ("vit_mlp",), True, dtype, pdtype,
                  name="fc1")(x)
        x = gelu_exact(x)
        return Dense((vc.hidden_size,), ("vit_mlp",), ("vit_embed",), True, dtype, pdtype,
                     name="fc2")(x)


def num_active_layers(num_layers: int, select_layer: int) -> int:
    """hidden_states[select_layer] of the references = output after this many layers."""
    n = num_layers + 1 + select_layer if select_layer < 0 else select_layer
    if not 0 < n <= num_layers:
        raise ValueError(f"select_layer={select_layer} is out of range for {num_layers} layers")
    return n


class InternViT(nn.Module):
    config: VLMConfig

    @nn.compact
    def __call__(self, pixel_values):
        vc = self.config.vision
        x = VisionEmbeddings(self.config, name="embeddings")(pixel_values)
        n_active = num_active_layers(vc.num_hidden_layers, self.config.select_layer)
        active = jnp.arange(vc.num_hidden_layers) < n_active
        stack = scan_layers(VisionLayer, vc.num_hidden_layers, self.config.remat_policy,
                            in_axes=(0,))
        x, _ = stack(self.config, name="layers")(x, active)
        return x[:, 1:]  # drop CLS
