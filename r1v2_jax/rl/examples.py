"""Prompt examples as the trainers see them: token ids, image tiles, the ground truth and
(for synthetic scenes) the known image content used by the hallucination metric."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from r1v2_jax.data.image import TilingConfig, preprocess_images
from r1v2_jax.data.prompts import PromptConfig, encode_prompt
from r1v2_jax.data.records import PromptRecord
from r1v2_jax.data.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class PromptExample:
    uid: int  # stable id: seeds this prompt's samples so they do not depend on batching
    prompt_ids: np.ndarray  # int32 [P]
    pixel_values: np.ndarray  # float32 [tiles, H, W, 3] (tiles may be 0)
    question: str
    answer: str
    answer_type: str
    scene: Any = None  # r1v2_jax.data.synthetic.Scene when the content is known


def from_record(uid: int, record: PromptRecord, tokenizer: Tokenizer, tiling: TilingConfig,
                prompt: PromptConfig) -> PromptExample:
    images = preprocess_images(record.images, tiling)
    ids = encode_prompt(tokenizer, record.question, images.num_tiles, prompt)
    # `scene` is the synthetic task's ground truth only; a record's `meta` is arbitrary
    return PromptExample(uid, np.asarray(ids, np.int32), images.pixel_values, record.question,
                         record.answer, record.answer_type)


def from_synthetic(uid: int, example, tokenizer: Tokenizer, tiling: TilingConfig,
                   prompt: PromptConfig) -> PromptExample:
    """A `r1v2_jax.data.synthetic.Example` rendered and tiled in memory."""
    images = preprocess_images([example.image()], tiling)
    question = "<image>\n" + example.question.text
    ids = encode_prompt(tokenizer, question, images.num_tiles, prompt)
    return PromptExample(uid, np.asarray(ids, np.int32), images.pixel_values, question,
                         example.question.answer, example.question.answer_type, example.scene)


def from_synthetic_many(examples: Sequence, tokenizer: Tokenizer, tiling: TilingConfig,
                        prompt: PromptConfig, uid_offset: int = 0) -> list[PromptExample]:
    return [from_synthetic(uid_offset + i, e, tokenizer, tiling, prompt)
            for i, e in enumerate(examples)]
