"""The R1V2 vision-language model: y = f_l(f_c(f_v(x_v)), x_t).

Image features replace the embeddings of the `<IMG_CONTEXT>` tokens of the batch in
order (row-major over [batch, seq]): tile i's features fill the i-th run of
`num_image_tokens` placeholders. The number of placeholders must equal
tiles * num_image_tokens; `r1v2_jax.data.prompts` guarantees it (it cannot be checked
inside jit).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1v2_jax.models.adapter import Adapter
from r1v2_jax.models.config import VLMConfig
from r1v2_jax.models.qwen2 import KVCache, Qwen2
from r1v2_jax.models.vit import InternViT


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class VLMOutput:
    logits: jax.Array | None
    hidden: jax.Array
    cache: KVCache | None = None


def default_positions(attention_mask: jax.Array) -> jax.Array:
    """RoPE positions that skip padding: 0, 1, 2, ... over the real tokens of each row."""
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


def merge_image_features(embeds: jax.Array, is_image: jax.Array, features: jax.Array) -> jax.Array:
    """embeds [B, T, E]; is_image [B, T] bool; features [K, E] in placeholder order."""
    flat = is_image.reshape(-1)
    index = jnp.clip(jnp.cumsum(flat.astype(jnp.int32)) - 1, 0, features.shape[0] - 1)
    gathered = jnp.take(features, index, axis=0).reshape(embeds.shape)
    return jnp.where(is_image[..., None], gathered.astype(embeds.dtype), embeds)


class VLM(nn.Module):
    config: VLMConfig

    def setup(self):
        self.vision = InternViT(self.config)
        self.adapter = Adapter(self.config)
        self.text = Qwen2(self.config)

    def image_features(self, pixel_values: jax.Array) -> jax.Array:
        """[tiles, H, W, 3] -> [tiles, num_image_tokens, E]."""
        return self.adapter(self.vision(pixel_values.astype(self.config.jnp_dtype)))

    def embed(self, input_ids: jax.Array, pixel_values: jax.Array | None = None) -> jax.Array:
        x = self.text.embed(input_ids)
        if pixel_values is not None:
            feats = self.image_features(pixel_values)
            feats = feats.reshape(-1, feats.shape[-1])
            x = merge_image_features(x, input_ids == self.config.image_token_id, feats)
        return x

    def __call__(self, input_ids, pixel_values=None, *, attention_mask=None, positions=None,
                 segment_ids=None, cache: KVCache | None = None, cache_index=None, kv_mask=None,
                 return_logits: bool = True) -> VLMOutput:
        """Forward pass for training, scoring and prefill/decode.

        Without `cache`: `attention_mask` [B, T] (1 = real token; default all ones) masks
        padding, positions default to `default_positions(attention_mask)`.
        With `cache`: the tokens are written at slots [cache_index, cache_index + T) and
        `kv_mask` [B, S] marks which cache slots hold real tokens; `positions` are required.
        """
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        if positions is None:
            if cache is not None:
                raise ValueError("decoding with a KV cache needs explicit positions")
            positions = default_positions(attention_mask)
        if cache is not None and kv_mask is None:
            raise ValueError("decoding with a KV cache needs kv_mask [B, S]")
        embeds = self.embed(input_ids, pixel_values)
        hidden, cache = self.text.decode(embeds, positions,
                                         attention_mask if cache is None else kv_mask,
                                         cache, cache_index, segment_ids)
        logits = self.text.logits(hidden) if return_logits else None
        return VLMOutput(logits=logits, hidden=hidden, cache=cache)

    def logits(self, hidden: jax.Array) -> jax.Array:
        return self.text.logits(hidden)


def lm_head_kernel(config: VLMConfig, params) -> jax.Array:
    """The LM head as an [E, V] matrix (the embedding transposed when tied)."""
    text = params["text"]
    if config.text.tie_word_embeddings:
        return text["embed_tokens"]["embedding"].T
    return text["lm_head"]["kernel"]


def dummy_inputs(config: VLMConfig, batch: int = 1) -> tuple[jax.Array, jax.Array]:
    """Smallest inputs that touch every parameter (one tile, its placeholders + one token)."""
    n = config.num_image_tokens
    ids = jnp.concatenate([jnp.full((batch, n), config.image_token_id, jnp.int32),
                           jnp.zeros((batch, 1), jnp.int32)], axis=1)
    size = config.vision.image_size
    pixels = jnp.zeros((batch, size, size, config.vision.num_channels), jnp.float32)
    return ids, pixels


def init_params(config: VLMConfig, rng: jax.Array, *, boxed: bool = False):
    """Random parameters (with logical-axis metadata boxes when `boxed`)."""
    ids, pixels = dummy_inputs(config)
    params = VLM(config).init(rng, ids, pixels)["params"]
    return params if boxed else nn.meta.unbox(params)


def abstract_params(config: VLMConfig, *, boxed: bool = False):
    """Parameter shapes/dtypes (jax.ShapeDtypeStruct) without allocating anything."""
    return jax.eval_shape(lambda r: init_params(config, r, boxed=boxed), jax.random.key(0))


def count_params(config: VLMConfig) -> dict[str, int]:
    shapes = abstract_params(config)
    counts = {k: sum(int(x.size) for x in jax.tree.leaves(v)) for k, v in shapes.items()}
    counts["total"] = sum(counts.values())
    return counts
