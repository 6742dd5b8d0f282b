"""SFT records: a prompt record with the response to imitate (warm / cold start).

One JSON object per line:

    {"images": ["img/0001.png"], "question": "<image>\\nHow many ...?",
     "response": "<think>\\n...\\n</think>\\n\\nThe answer is \\\\boxed{3}.",
     "answer": "3", "answer_type": "number"}

`answer` / `answer_type` are optional (kept for evaluation on the same file); `response`
must start with the generation prompt's opener (`<think>\\n`), as in preference records.
Validation, error messages and `data.on_invalid` are those of `data/records.py`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from r1v2_jax.data import records as rec
from r1v2_jax.data.prompts import completion_of, ensure_image_tags
from r1v2_jax.data.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class SFTRecord:
    images: tuple[str, ...]
    question: str  # with one image tag per image
    response: str
    num_tiles: tuple[int, ...]
    prompt_tokens: int | None
    source: str  # "file:line"
    meta: Any = None


def parse_sft_record(obj: dict, base: str, source: str, rules: rec.RecordRules,
                     tokenizer: Tokenizer | None, *, images_of: rec.ImagesOf | None = None,
                     gold: bool = True) -> SFTRecord:
    """images_of, gold: as for `records.parse_prompt_record` (the gold is not checked)."""
    rec._check_keys(obj, {"images", "question", "response", "answer", "answer_type", "id",
                          "meta"}, source)
    images, tiles = (images_of or rec._images_at(base))(obj, source, rules)
    question = rec._nonempty(obj, "question", source, "empty_question")
    response = rec._nonempty(obj, "response", source, "empty_response")
    try:
        completion_of(response, rules.prompt)
    except ValueError as err:
        raise rec.RecordError(source, "response", "bad_response", str(err)) from err
    n = rec._prompt_tokens("question", question, tiles, tokenizer, rules, source)
    return SFTRecord(images, ensure_image_tags(question, len(tiles), rules.prompt.image_tag),
                     response, tiles, n, source, obj.get("meta"))


def load_sft_records(path: str | os.PathLike, rules: rec.RecordRules = rec.RecordRules(),
                     tokenizer: Tokenizer | None = None) -> rec.LoadedRecords:
    return rec._load(path, parse_sft_record, rules, tokenizer)
