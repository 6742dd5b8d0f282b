"""ChatML prompts with InternVL image placeholders and the R1 `<think>` opener.

Prompt text (system turn only when a system prompt is given) without a chat template:

    <|im_start|>system\\n{system}<|im_end|>\\n
    <|im_start|>user\\n{question}<|im_end|>\\n
    <|im_start|>assistant\\n<think>\\n

With `PromptConfig.chat_template` (a real checkpoint's, `Tokenizer.chat_template`), the
messages [system?, user] are rendered by that template with add_generation_prompt=True,
then `think_prefix` is appended unless the render already ends with it.

Each `<image>` tag in the question, in order, becomes
`<img>` + `<IMG_CONTEXT>` x (num_image_token * tiles of that image) + `</img>`; the model
replaces the embeddings of the `<IMG_CONTEXT>` tokens by the image features.

A *response* is the whole assistant message as the reward sees it, `<think>\\n...</think>
answer`; its opener `<think>\\n` already ends the prompt, so the *completion* (what the
policy generates and what is trained) is the response without it, followed by `<|im_end|>`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from r1v2_jax.data.chat_template import render_chat
from r1v2_jax.data.tokenizer import SpecialTokenNames, Tokenizer


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    system: str | None = None  # system prompt; None -> no system turn
    num_image_token: int = 256  # <IMG_CONTEXT> per tile: (image_size/patch)^2 * ratio^2
    think_prefix: str = "<think>\n"  # opens the reasoning in the generation prompt; "" = off
    image_tag: str = "<image>"  # placeholder for one image in the user text
    chat_template: str | None = None  # jinja2 template of the checkpoint; None = ChatML above


def ensure_image_tags(question: str, num_images: int, image_tag: str = "<image>") -> str:
    """InternVL chat convention: a question with images but no tag gets one tag per image
    prepended (`<image>\\n` each). A question that already has tags is returned unchanged
    (the count is checked when the prompt is built)."""
    if num_images and image_tag not in question:
        return f"{image_tag}\n" * num_images + question
    return question


def expand_image_tags(text: str, num_tiles: Sequence[int], *, num_image_token: int,
                      names: SpecialTokenNames = SpecialTokenNames(),
                      image_tag: str = "<image>") -> str:
    """Replaces the i-th `image_tag` by the placeholder tokens of image i."""
    pieces = text.split(image_tag)
    if len(pieces) - 1 != len(num_tiles):
        raise ValueError(
            f"the text has {len(pieces) - 1} {image_tag} tag(s) but {len(num_tiles)} image(s) "
            f"were given: {text[:80]!r}")
    out = [pieces[0]]
    for tiles, rest in zip(num_tiles, pieces[1:]):
        if tiles < 1:
            raise ValueError(f"an image must have at least one tile, got {tiles}")
        out += [names.img_start, names.img_context * (num_image_token * tiles), names.img_end,
                rest]
    return "".join(out)


def prompt_text(question: str, num_tiles: Sequence[int], config: PromptConfig = PromptConfig(),
                names: SpecialTokenNames = SpecialTokenNames()) -> str:
    """The generation prompt as text (see the module docstring)."""
    user = expand_image_tags(question, num_tiles, num_image_token=config.num_image_token,
                             names=names, image_tag=config.image_tag)
    if config.chat_template is not None:
        messages = [] if config.system is None else [{"role": "system", "content": config.system}]
        text = render_chat(config.chat_template, messages + [{"role": "user", "content": user}],
                           add_generation_prompt=True, eos_token=names.eos, pad_token=names.pad)
        return text if text.endswith(config.think_prefix) else text + config.think_prefix
    start, end = names.im_start, names.eos
    system = "" if config.system is None else f"{start}system\n{config.system}{end}\n"
    return f"{system}{start}user\n{user}{end}\n{start}assistant\n{config.think_prefix}"


def encode_prompt(tokenizer: Tokenizer, question: str, num_tiles: Sequence[int],
                  config: PromptConfig = PromptConfig()) -> list[int]:
    """Token ids of the generation prompt."""
    return tokenizer.encode(prompt_text(question, num_tiles, config, tokenizer.names))


def completion_of(response: str, config: PromptConfig = PromptConfig()) -> str:
    """The part of a full response the policy generates (the response minus the opener)."""
    if not response.startswith(config.think_prefix):
        raise ValueError(
            f"response must start with the generation prompt's opener "
            f"{config.think_prefix!r}, got {response[:40]!r}")
    return response[len(config.think_prefix):]


def response_of(completion: str, config: PromptConfig = PromptConfig()) -> str:
    """The full response (what rewards judge) of a generated completion."""
    return config.think_prefix + completion


@dataclasses.dataclass(frozen=True)
class TrainingSequence:
    ids: np.ndarray  # int32 [T]: prompt then completion (+ eos)
    completion_mask: np.ndarray  # int32 [T]: 1 on completion tokens (eos included), else 0
    prompt_length: int


def build_training_sequence(tokenizer: Tokenizer, question: str, num_tiles: Sequence[int],
                            response: str, config: PromptConfig = PromptConfig(), *,
                            append_eos: bool = True) -> TrainingSequence:
    """Prompt ids + completion ids (the response minus the opener, then `<|im_end|>`).

    Prompt and completion are encoded separately, as in generation, where the completion
    tokens are produced after the prompt's last token.
    """
    prompt_ids = encode_prompt(tokenizer, question, num_tiles, config)
    completion_ids = tokenizer.encode(completion_of(response, config))
    if append_eos:
        completion_ids.append(tokenizer.eos_id)
    if not completion_ids:
        raise ValueError("empty completion: nothing to train on")
    ids = np.asarray(prompt_ids + completion_ids, np.int32)
    mask = np.zeros(len(ids), np.int32)
    mask[len(prompt_ids):] = 1
    return TrainingSequence(ids, mask, len(prompt_ids))
