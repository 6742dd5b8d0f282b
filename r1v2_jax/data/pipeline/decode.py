"""A record view -> what a trainer consumes: token ids and image tiles.

Tiles stay uint8 [tiles, size, size, 3] on the host (a quarter of float32's bytes);
`normalize_tiles` is `image.normalize_tile`'s arithmetic, for NumPy on the host or
jax.numpy inside the jitted step, so normalising there gives the eager path's floats.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from r1v2_jax.data.image import ImageError, TilingConfig, dynamic_tiles
from r1v2_jax.data.prompts import (PromptConfig, build_training_sequence, completion_of,
                                   encode_prompt)
from r1v2_jax.data.pipeline.validate import open_image_ref
from r1v2_jax.data.tokenizer import Tokenizer


def tiles_uint8(refs: Sequence, tiling: TilingConfig, where: str) -> np.ndarray:
    """Every image of a record, tiled as image.preprocess_images does, as uint8."""
    s = tiling.image_size
    per_image = []
    for k, ref in enumerate(refs):
        img = open_image_ref(ref, f"{where} images[{k}]")
        for tile in dynamic_tiles(img, image_size=s, min_num=tiling.min_num,
                                  max_num=tiling.max_num, use_thumbnail=tiling.use_thumbnail):
            per_image.append(np.asarray(tile, np.uint8))
    return np.stack(per_image) if per_image else np.zeros((0, s, s, 3), np.uint8)


def normalize_tiles(tiles, tiling: TilingConfig, xp=np):
    """uint8 tiles -> float32 (x / 255 - mean) / std, in `xp` (numpy or jax.numpy)."""
    x = xp.asarray(tiles).astype(xp.float32) / xp.float32(255.0)
    return (x - xp.asarray(tiling.mean, xp.float32)) / xp.asarray(tiling.std, xp.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class DecodedPrompt:  # rl.examples.PromptExample's fields, tiles as uint8
    uid: int
    prompt_ids: np.ndarray  # int32 [P]
    tiles: np.ndarray  # uint8 [tiles, H, W, 3]
    question: str
    answer: str
    answer_type: str
    meta: Any
    source: str


@dataclasses.dataclass(frozen=True, eq=False)
class DecodedPreference:  # rl.pairs.PreferencePair's
    uid: int
    prompt_ids: np.ndarray
    tiles: np.ndarray
    prompt: str
    chosen_ids: np.ndarray  # int32, eos included
    rejected_ids: np.ndarray
    chosen_score: float  # nan when absent
    rejected_score: float
    meta: Any
    source: str


@dataclasses.dataclass(frozen=True, eq=False)
class DecodedSFT:  # train.sft.SFTExample's
    uid: int
    prompt_ids: np.ndarray
    completion_ids: np.ndarray  # int32, eos included
    tiles: np.ndarray
    source: str


def decode(kind: str, uid: int, r, tokenizer: Tokenizer, tiling: TilingConfig,
           prompt: PromptConfig):
    tiles = tiles_uint8(r.images, tiling, r.source)
    if len(tiles) != sum(r.num_tiles):  # the prompt's placeholders were counted from headers
        raise ImageError(f"{r.source}: decoded images give {len(tiles)} tiles, their headers "
                         f"{sum(r.num_tiles)}")
    if kind == "sft":
        seq = build_training_sequence(tokenizer, r.question, r.num_tiles, r.response, prompt)
        ids = np.asarray(seq.ids, np.int32)
        return DecodedSFT(uid, ids[:seq.prompt_length], ids[seq.prompt_length:], tiles,
                          r.source)
    text = r.question if kind == "prompt" else r.prompt
    ids = np.asarray(encode_prompt(tokenizer, text, r.num_tiles, prompt), np.int32)
    if kind == "prompt":
        return DecodedPrompt(uid, ids, tiles, r.question, r.answer, r.answer_type, r.meta,
                             r.source)
    chosen, rejected = (np.asarray(tokenizer.encode(completion_of(t, prompt))
                                   + [tokenizer.eos_id], np.int32)
                        for t in (r.chosen, r.rejected))
    nan = float("nan")
    return DecodedPreference(uid, ids, tiles, r.prompt, chosen, rejected,
                             nan if r.chosen_score is None else r.chosen_score,
                             nan if r.rejected_score is None else r.rejected_score, r.meta,
                             r.source)
