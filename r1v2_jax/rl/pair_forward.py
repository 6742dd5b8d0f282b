"""Chosen and rejected sides of a preference micro-batch as one forward over 2b rows
(MPO's log-probs, the reward model's scores).

The VLM fills the `<IMG_CONTEXT>` placeholders of the whole batch, row-major, from the
flat tile array (models/vlm.py), and a micro-batch's tiles are packed as [its prompts'
real tiles in order, zero padding] (rl/batching.py `pack_tiles`). With the rejected rows
stacked under the chosen ones, the placeholders ask for the real tiles twice in a row:
[real, real, padding]. Repeating the padded array ([real, padding, real, padding]) hands
the rejected rows the padding - zero images - whenever the micro-batch has fewer real
tiles than slots. The vision tower runs on 2 x slots tiles either way (as before).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1v2_jax.models import VLMConfig


def pair_pixels(config: VLMConfig, pixel_values: jax.Array, chosen_ids: jax.Array) -> jax.Array:
    """[slots, H, W, C] -> [2 * slots, H, W, C]: the K real tiles, the same K again, then
    filler (never read). K = the chosen rows' placeholders / num_image_tokens (both sides
    share the prompts, so the rejected rows have as many)."""
    slots = pixel_values.shape[0]
    k = jnp.sum(chosen_ids == config.image_token_id) // config.num_image_tokens
    j = jnp.arange(2 * slots)
    src = jnp.clip(jnp.where(j < k, j, j - k), 0, slots - 1)
    return jnp.take(pixel_values, src, axis=0)


def pair_rows(config: VLMConfig, chosen_ids, chosen_mask, rejected_ids, rejected_mask,
              pixel_values=None):
    """(ids [2b, T], mask [2b, T], pixels [2 * slots, ...] or None): chosen rows first."""
    ids = jnp.concatenate([chosen_ids, rejected_ids])
    mask = jnp.concatenate([chosen_mask, rejected_mask])
    pixels = None if pixel_values is None else pair_pixels(config, pixel_values, chosen_ids)
    return ids, mask, pixels
