"""Answer one (image, question) with an R1V2 checkpoint: ChatML prompt opened with
`<think>\\n`, sampled generation, then the reasoning and the answer split at `</think>`."""

from __future__ import annotations

import dataclasses

import numpy as np

from r1v2_jax.data.image import TilingConfig, preprocess_images
from r1v2_jax.data.prompts import PromptConfig, encode_prompt, ensure_image_tags
from r1v2_jax.data.tokenizer import Tokenizer
from r1v2_jax.generate.api import generate
from r1v2_jax.models import VLMConfig


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 0
    repetition_penalty: float = 1.05  # R1V2's reference chat sampling
    max_new_tokens: int = 4096
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Answer:
    reasoning: str  # the text before `</think>` (all of it when the model never closed it)
    answer: str  # the text after `</think>`
    text: str  # the whole completion, stop token excluded
    num_tokens: int  # generated tokens, stop token included
    truncated: bool  # max_new_tokens reached before a stop token


def split_reasoning(text: str, end_think: str = "</think>") -> tuple[str, str]:
    """(reasoning, answer) around the first `end_think`, both stripped; no marker ->
    (text, "")."""
    reasoning, marker, answer = text.partition(end_think)
    return reasoning.strip(), answer.strip() if marker else ""


def tiling_for(config: VLMConfig, max_tiles: int | None = None) -> TilingConfig:
    """The checkpoint's own preprocessing facts (optionally fewer tiles)."""
    return TilingConfig(image_size=config.force_image_size, min_num=config.min_dynamic_patch,
                        max_num=max_tiles or config.max_dynamic_patch,
                        use_thumbnail=config.use_thumbnail)


def answer_question(config: VLMConfig, params, tokenizer: Tokenizer, question: str,
                    image=None, *, system: str | None = None,
                    options: SamplingOptions = SamplingOptions(),
                    max_tiles: int | None = None) -> Answer:
    """Generates one answer; `image` is a path or PIL image (None: text only)."""
    if tokenizer.img_context_id != config.image_token_id:
        raise ValueError(
            f"tokenizer {tokenizer.source} maps {tokenizer.names.img_context} to "
            f"{tokenizer.img_context_id} but the model config says image_token_id="
            f"{config.image_token_id}")
    images = preprocess_images([] if image is None else [image], tiling_for(config, max_tiles))
    question = ensure_image_tags(question, len(images.num_tiles))
    prompt = encode_prompt(tokenizer, question, images.num_tiles,
                           PromptConfig(system=system, num_image_token=config.num_image_tokens,
                                        chat_template=tokenizer.chat_template))
    stops = tuple(dict.fromkeys((tokenizer.eos_id, tokenizer.pad_id)))
    out = generate(config, params, np.asarray([prompt], np.int32),
                   images.pixel_values if images.num_tiles else None,
                   max_new_tokens=options.max_new_tokens, temperature=options.temperature,
                   top_p=options.top_p, top_k=options.top_k,
                   repetition_penalty=options.repetition_penalty, eos_token_id=stops,
                   pad_token_id=tokenizer.pad_id, seed=options.seed)
    n = int(out.lengths[0])
    tokens = np.asarray(out.tokens[0, :n]).tolist()
    if tokens and tokens[-1] in stops:
        tokens = tokens[:-1]
    text = tokenizer.decode(tokens)
    reasoning, answer = split_reasoning(text, tokenizer.names.end_think)
    return Answer(reasoning, answer, text, n, bool(out.truncated[0]))
