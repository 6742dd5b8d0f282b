"""`generate`: validated host-side entry point of the generation engine.

The host moves each prompt row's real tokens (any padding: left, right, mixed) to the end
of a row of the bucketed prompt width (left padding), pads images and the generation
length to their buckets, then runs the cached compiled program of `engine.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from r1v2_jax.generate.buckets import Buckets, bucket_size
from r1v2_jax.generate.engine import Plan, run_plan
from r1v2_jax.models import VLMConfig

_UINT32 = 2**32


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class GenerationOutput:
    """Rows are prompt-major: row b*num_samples + g is sample g of prompt b.

    tokens    int32 [R, max_new_tokens]; after a row's stop token: pad_token_id
    logprobs  fp32 [R, max_new_tokens]: log softmax(logits / temperature)[token] over the
              full vocabulary (temperature 1 for greedy); 0 after the stop token
    lengths   int32 [R]: generated tokens, the stop token included
    truncated bool [R]: True when the row hit max_new_tokens without a stop token
    """

    tokens: jax.Array
    logprobs: jax.Array
    lengths: jax.Array
    truncated: jax.Array


def _token_ids(value, vocab: int, name: str) -> tuple[int, ...]:
    ids = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    bad = [i for i in ids if not isinstance(i, (int, np.integer)) or not 0 <= i < vocab]
    if bad:
        raise ValueError(f"{name} {value!r}: ids must be ints in [0, {vocab})")
    return tuple(int(i) for i in ids)


def _row_identities(sample_ids, batch: int, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(sample id, sample index) of every output row; see `generate`."""
    rows = batch * num_samples
    if sample_ids is None:
        sample_ids = np.arange(batch)
    ids = np.asarray(sample_ids).reshape(-1)
    if not np.issubdtype(ids.dtype, np.integer) or ids.size and (ids.min() < 0 or
                                                                  ids.max() >= _UINT32):
        raise ValueError(f"sample_ids must be integers in [0, 2**32), got {sample_ids!r}")
    if ids.size == batch:
        return np.repeat(ids, num_samples), np.tile(np.arange(num_samples), batch)
    if ids.size == rows:
        return ids, np.zeros(rows, np.int64)
    raise ValueError(f"sample_ids must have batch={batch} (one per prompt) or "
                     f"batch*num_samples={rows} (one per output row) entries, got {ids.size}")


def _left_pad(ids: np.ndarray, mask: np.ndarray, width: int, filler: int) -> np.ndarray:
    """The real tokens of each row, in order, in the LAST slots of a `width`-wide row (left
    padding, whatever the input's padding); the other slots hold `filler`."""
    order = np.argsort(mask, axis=1, kind="stable")  # padding first, tokens in order after
    packed = np.take_along_axis(ids, order, axis=1)
    if packed.shape[1] < width:
        packed = np.pad(packed, ((0, 0), (width - packed.shape[1], 0)))
    packed = packed[:, -width:]  # width >= every row's length: no real token is cut
    real = np.arange(width)[None, :] >= width - mask.sum(1)[:, None]
    return np.where(real, packed, filler).astype(np.int32)


def _tokens_per_tile(config: VLMConfig, side: int) -> int:
    per_side = side // config.vision.patch_size * config.downsample_ratio
    return int(round(per_side)) ** 2


def _place(plan: Plan, params, inputs):
    """Device arrays; under a mesh: params in their training layout, inputs split over the
    batch axes along their first dimension (replicated when it does not divide)."""
    if plan.mesh is None:
        return params, tuple(None if x is None else jnp.asarray(x) for x in inputs)
    from r1v2_jax.sharding import batch_sharding, param_shardings

    params = jax.device_put(params, param_shardings(plan.config, plan.mesh, plan.rules))
    inputs = tuple(None if x is None else jax.device_put(
        x, batch_sharding(plan.mesh, plan.rules, x.shape)) for x in inputs)
    return params, inputs


def generate(config: VLMConfig, params, input_ids, pixel_values=None, *, attention_mask=None,
             max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
             top_k: int = 0, repetition_penalty: float = 1.0, num_samples: int = 1, eos_token_id: int | Sequence[int],
             pad_token_id: int | None = None, seed: int = 0, sample_ids=None,
             suppress_tokens: Sequence[int] | None = None,
             buckets: Buckets = Buckets(), slots: int | None = None, mesh=None,
             rules=None) -> GenerationOutput:
    """Samples `num_samples` completions for each prompt row of `input_ids` [B, T].

    attention_mask [B, T] (1 = real token; default all ones) may pad on either side.
    pixel_values [tiles, H, W, 3] (channels last) fill the prompts' `<IMG_CONTEXT>`
    placeholders in order. temperature 0 = greedy; otherwise temperature/top_k/top_p
    sampling (see `sampling.py`). repetition_penalty (Hugging Face's; 1.0 = off): the logits
    of tokens already in the row (real prompt tokens and generated ones) are divided by it
    when positive, multiplied when negative, before sampling; the returned log-probs stay
    the policy's (no penalty), as the trainer scores them. eos_token_id: one stop id or a tuple of them (an empty
    tuple never stops early). pad_token_id defaults to the first stop id.
    sample_ids: B ids (row b*G+g gets key (seed, sample_ids[b], g, step)) or B*G ids (row r
    gets key (seed, sample_ids[r], 0, step)); default arange(B). A row's result therefore
    does not depend on which other rows share its batch.
    suppress_tokens: ids never generated; default (config.image_token_id,): a generated
    `<IMG_CONTEXT>` would be taken for an image slot when the sequence is scored. The
    returned log-probs are still those of the full distribution. Pass () to disable.
    buckets: the static-shape buckets of prompt length, new tokens and tiles.
    slots: None = static batch (all B*G rows decode together until the last stops); an int
    = continuous batching on that many decode slots, refilled as rows stop (same tokens,
    log-probs and stop reasons as static; see `continuous.py`).
    mesh, rules: run on this mesh (`r1v2_jax.sharding`; rules default to DEFAULT_RULES):
    params are placed in their training layout (a no-op when they already are), prompt
    rows and decode rows over the batch axes, KV caches by `kv_cache_sharding`.
    """
    vocab = config.text.vocab_size
    ids = np.asarray(input_ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"input_ids must be an int array [batch, length], got {ids.dtype} "
                         f"{ids.shape}")
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
    if mask.shape != ids.shape or not np.isin(mask, (0, 1)).all():
        raise ValueError(f"attention_mask must be 0/1 of shape {ids.shape}, got {mask.shape}")
    mask = mask.astype(np.int32)
    lengths = mask.sum(1)
    if (lengths == 0).any():
        raise ValueError(f"prompt rows {np.flatnonzero(lengths == 0).tolist()} have no tokens")
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or num_samples < 1:
        raise ValueError(f"need temperature >= 0, 0 < top_p <= 1, top_k >= 0, num_samples >= 1;"
                         f" got {temperature}, {top_p}, {top_k}, {num_samples}")
    if not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0, got {repetition_penalty}")
    if not 0 <= seed < _UINT32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    eos = _token_ids(eos_token_id, vocab, "eos_token_id")
    suppress = _token_ids((config.image_token_id,) if suppress_tokens is None
                          else suppress_tokens, vocab, "suppress_tokens")
    if pad_token_id is None:
        if not eos:
            raise ValueError("pad_token_id is required when eos_token_id is empty")
        pad_token_id = eos[0]
    if not 0 <= pad_token_id < vocab or pad_token_id == config.image_token_id:
        raise ValueError(f"pad_token_id must be in [0, {vocab}) and not the image token, "
                         f"got {pad_token_id}")

    batch = ids.shape[0]
    width = bucket_size(int(lengths.max()), buckets.prompt, buckets.min_prompt, "prompt length")
    prompt = _left_pad(ids, mask, width, pad_token_id)
    placeholders = int((prompt == config.image_token_id).sum())
    tiles = 0
    if pixel_values is None:
        if placeholders:
            raise ValueError(f"the prompts hold {placeholders} image placeholder tokens "
                             f"(id {config.image_token_id}) but no pixel_values were given")
    else:
        pixels = np.asarray(pixel_values, np.float32)
        if pixels.ndim != 4 or pixels.shape[1] != pixels.shape[2]:
            raise ValueError(f"pixel_values must be [tiles, H, H, C], got {pixels.shape}")
        expected = pixels.shape[0] * _tokens_per_tile(config, pixels.shape[1])
        if placeholders != expected:
            raise ValueError(f"the prompts hold {placeholders} image placeholder tokens but "
                             f"{pixels.shape[0]} tiles need {expected}")
        tiles = bucket_size(pixels.shape[0], buckets.tiles, buckets.min_tiles, "image tiles")
        pixels = np.pad(pixels, ((0, tiles - pixels.shape[0]), (0, 0), (0, 0), (0, 0)))
    new_tokens = bucket_size(max_new_tokens, buckets.new_tokens, buckets.min_new_tokens,
                             "max_new_tokens")
    row_ids, row_index = _row_identities(sample_ids, batch, num_samples)
    if slots is not None and (not isinstance(slots, (int, np.integer)) or slots < 1):
        raise ValueError(f"slots must be None (static batch) or an int >= 1, got {slots!r}")
    if mesh is None and rules is not None:
        raise ValueError("rules were given without a mesh")
    if mesh is not None:
        from r1v2_jax.sharding import DEFAULT_RULES, rules_from_config

        rules = DEFAULT_RULES if rules is None else rules_from_config(rules)

    greedy = temperature == 0
    plan = Plan(config=config, batch=batch, prompt_len=width, new_tokens=new_tokens,
                num_tiles=tiles, num_samples=num_samples, greedy=greedy,
                top_k=0 if greedy else int(top_k), use_top_p=not greedy and top_p < 1.0,
                eos_ids=eos, pad_id=int(pad_token_id), suppress=suppress,
                slots=int(slots or 0), use_penalty=repetition_penalty != 1.0, mesh=mesh,
                rules=rules)
    inputs = (prompt, lengths.astype(np.int32), None if tiles == 0 else pixels,
              row_ids.astype(np.uint32), row_index.astype(np.uint32))
    params, inputs = _place(plan, params, inputs)
    tokens, logprobs, gen_len, truncated = run_plan(
        plan, params, *inputs, seed, 1.0 if greedy else temperature, top_p, max_new_tokens,
        repetition_penalty)
    return GenerationOutput(tokens[:, :max_new_tokens], logprobs[:, :max_new_tokens], gen_len,
                            truncated)
