"""Supervised fine-tuning on (prompt, completion) pairs: the demo's warm start, and the
generation term of MPO reused on its own (the "SFT" baseline of the paper's Table 3)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from r1v2_jax.losses import sft_loss
from r1v2_jax.models import VLMConfig
from r1v2_jax.rl.batching import pack_sequences, pack_tiles, to_micro
from r1v2_jax.train.steps import accumulate, apply_update, merged, sequence_token_logps


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SFTBatch:
    input_ids: jax.Array  # [M, b, T]
    attention_mask: jax.Array  # [M, b, T]
    completion_mask: jax.Array  # [M, b, T-1]
    pixel_values: jax.Array | None = None  # [M, tiles, H, W, 3]


def sft_terms(config: VLMConfig, frozen, compute_dtype, trainable, mb: SFTBatch):
    params = merged(trainable, frozen, compute_dtype)
    logps = sequence_token_logps(config, params, mb.input_ids, mb.attention_mask, mb.pixel_values)
    nll_sum, metrics = sft_loss(logps, mb.completion_mask, num_items_in_batch=1.0)
    return nll_sum, jnp.sum(mb.completion_mask), {"num_tokens": metrics["num_tokens"]}


def sft_update(config, optimizer, frozen, trainable, opt_state, batch: SFTBatch, compute_dtype=None):
    terms = functools.partial(sft_terms, config, frozen, compute_dtype)
    loss, grads, sums = accumulate(terms, trainable, batch)
    trainable, opt_state, upd = apply_update(optimizer, trainable, opt_state, grads, loss)
    return trainable, opt_state, {"loss": loss, **sums, **upd}


def make_sft_update(config: VLMConfig, optimizer, *, compute_dtype=None):
    fn = functools.partial(sft_update, config, optimizer, compute_dtype=compute_dtype)
    return jax.jit(fn, donate_argnums=(1, 2))


def sft_batch(prompts: Sequence[np.ndarray], completions: Sequence[np.ndarray],
              tiles: Sequence[np.ndarray], *, seq_len: int, micro: int, tiles_per_micro: int,
              pad_id: int, image_shape: tuple[int, int, int]) -> SFTBatch:
    ids, attn, comp = pack_sequences(prompts, completions, seq_len, pad_id)
    pixels = pack_tiles(tiles, tiles_per_micro, micro, image_shape) if tiles_per_micro else None
    return SFTBatch(to_micro(ids, micro), to_micro(attn, micro), to_micro(comp, micro), pixels)
