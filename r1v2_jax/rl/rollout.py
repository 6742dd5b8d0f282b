"""Rollouts: G sampled responses per prompt, decoded, scored, as host-side `Sample`s."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from r1v2_jax.data.prompts import PromptConfig, response_of
from r1v2_jax.data.tokenizer import Tokenizer
from r1v2_jax.rl.examples import PromptExample


@dataclasses.dataclass
class Sample:
    """One response to one prompt: the unit GRPO, the SSB and MPO work with."""

    example: PromptExample
    completion_ids: np.ndarray  # int32 [n]: generated tokens, the stop token included
    behaviour_logps: np.ndarray  # float32 [n]: log-probs under the sampling policy
    response: str  # the full response text (the `<think>\n` opener included)
    truncated: bool
    reward: float = 0.0
    accuracy: float = 0.0
    format: float = 0.0
    hallucinated: bool = False
    advantage: float = 0.0
    policy_version: int = 0


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
    num_samples: int
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0


def pack_prompts(examples: Sequence[PromptExample], pad_id: int, image_shape: tuple[int, int, int]):
    """Right-padded prompt ids [B, P] + mask, and all tiles concatenated in prompt order."""
    length = max(len(e.prompt_ids) for e in examples)
    ids = np.full((len(examples), length), pad_id, np.int32)
    mask = np.zeros((len(examples), length), np.int32)
    for i, e in enumerate(examples):
        ids[i, :len(e.prompt_ids)] = e.prompt_ids
        mask[i, :len(e.prompt_ids)] = 1
    tiles = [e.pixel_values for e in examples if len(e.pixel_values)]
    pixels = np.concatenate(tiles) if tiles else None
    return ids, mask, pixels


def rollout(config, params, examples: Sequence[PromptExample], options: SamplingOptions, *,
            tokenizer: Tokenizer, prompt: PromptConfig, seed: int, policy_version: int,
            score: Callable[..., dict[str, Any]], mesh=None, rules=None,
            slots: int | None = None) -> list[list[Sample]]:
    """Samples `options.num_samples` responses for each example (one shared prefill per
    prompt) and scores them with `score(examples, responses) -> {"reward", "accuracy",
    "format", "hallucinated": arrays}` (`r1v2_jax.rl.scoring`). Returns the groups, in
    example order.

    mesh / rules: generate on the trainer's mesh (params in their training layout, rows
    over the batch axes; `r1v2_jax.generate.generate`). slots: continuous batching on that
    many decode slots (None: one static batch)."""
    from r1v2_jax.generate import generate

    size = config.vision.image_size
    ids, mask, pixels = pack_prompts(examples, tokenizer.pad_id, (size, size, 3))
    out = generate(config, params, ids, pixels, attention_mask=mask,
                   max_new_tokens=options.max_new_tokens, temperature=options.temperature,
                   top_p=options.top_p, top_k=options.top_k, num_samples=options.num_samples,
                   eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id, seed=seed,
                   sample_ids=np.asarray([e.uid for e in examples], np.int32), mesh=mesh,
                   rules=rules, slots=slots)
    tokens, logps = np.asarray(out.tokens), np.asarray(out.logprobs)
    lengths, truncated = np.asarray(out.lengths), np.asarray(out.truncated)
    groups = []
    for b, example in enumerate(examples):
        group = []
        for g in range(options.num_samples):
            row = b * options.num_samples + g
            n = int(lengths[row])
            completion = tokens[row, :n].astype(np.int32)
            text_ids = completion[:-1] if n and completion[-1] == tokenizer.eos_id else completion
            response = response_of(tokenizer.decode(text_ids, skip_special_tokens=False), prompt)
            group.append(Sample(example, completion, logps[row, :n].astype(np.float32), response,
                                bool(truncated[row]), policy_version=policy_version))
        groups.append(group)
    flat = [s for g in groups for s in g]
    r = score([s.example for s in flat], [s.response for s in flat])
    for i, s in enumerate(flat):
        s.reward, s.accuracy, s.format = float(r["reward"][i]), float(r["accuracy"][i]), float(r["format"][i])
        s.hallucinated = bool(r["hallucinated"][i])
    return groups
