"""Rollouts: G sampled responses per prompt, decoded, scored, as host-side `Sample`s, with
the rollout's health metrics (`RolloutGroups.metrics`, `logprob_mismatch`)."""

from __future__ import annotations

import dataclasses
import time
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
    stop_reason: str = ""  # "stop_token", "stop_string" or "length"


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
    num_samples: int
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0  # Hugging Face's; 1.0 = off (R1V2's chat uses 1.05)
    stop_strings: tuple[str, ...] = ()  # cut on the host after decoding (stop_strings.py)


class RolloutGroups(list):
    """The groups of a rollout (a list, in example order) with its health metrics:

    rollout/decode_tokens_per_s   generated tokens / wall time of the generation call
    rollout/slot_occupancy        decode row-steps holding an unfinished sample / all
    rollout/generate_seconds      wall time of the generation call (compilation included
                                  on a program's first use)
    rollout/image_tokens          image placeholder tokens, checked equal to the features
                                  (tiles x tokens per tile) of every prompt
    rollout/stop_string_rate      share of samples cut by a stop string
    """

    metrics: dict[str, float]


def check_image_tokens(config, examples: Sequence[PromptExample]) -> int:
    """Hard check: every prompt holds exactly (its tiles x image tokens per tile)
    placeholders. Returns the total; raises ValueError naming the prompt otherwise."""
    total = 0
    for e in examples:
        placeholders = int(np.sum(np.asarray(e.prompt_ids) == config.image_token_id))
        features = len(e.pixel_values) * config.num_image_tokens
        if placeholders != features:
            raise ValueError(f"prompt uid {e.uid}: {placeholders} image placeholder tokens but "
                             f"{len(e.pixel_values)} tile(s) give {features} image features")
        total += placeholders
    return total


def logprob_mismatch(behaviour: Sequence[np.ndarray], trainer: Sequence[np.ndarray]
                     ) -> dict[str, float]:
    """Rollout-vs-trainer log-prob agreement over all completion tokens, with
    d = trainer - behaviour per token:

        logprob_delta_mean = mean |d|      logprob_delta_max = max |d|
        logprob_kl = mean(exp(d) - d - 1)  (k3 estimate of KL(behaviour || trainer) from
                                            tokens the behaviour policy sampled; >= 0)

    behaviour: each sample's sampler log-probs [n]; trainer: the trainer's log-probs of the
    same tokens [n] (e.g. its old log-probs at the completion positions)."""
    if len(behaviour) != len(trainer):
        raise ValueError(f"logprob_mismatch: {len(behaviour)} behaviour rows vs {len(trainer)}")
    for i, (b, t) in enumerate(zip(behaviour, trainer)):
        if np.shape(b) != np.shape(t):
            raise ValueError(f"logprob_mismatch: sample {i} has {np.shape(b)} behaviour and "
                             f"{np.shape(t)} trainer log-probs")
    d = np.concatenate([np.asarray(t, np.float64) - np.asarray(b, np.float64)
                        for b, t in zip(behaviour, trainer)] or [np.zeros(0)])
    if d.size == 0:
        return {"rollout/logprob_delta_mean": 0.0, "rollout/logprob_delta_max": 0.0,
                "rollout/logprob_kl": 0.0}
    return {"rollout/logprob_delta_mean": float(np.abs(d).mean()),
            "rollout/logprob_delta_max": float(np.abs(d).max()),
            "rollout/logprob_kl": float(np.mean(np.expm1(d) - d))}


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
    many decode slots (None: one static batch). Returns a `RolloutGroups` (a list of the
    groups) whose `.metrics` are the rollout's health figures."""
    from r1v2_jax.generate import engine_stats, generate
    from r1v2_jax.generate.stop_strings import stop_string_cut

    image_tokens = check_image_tokens(config, examples)
    size = config.vision.image_size
    ids, mask, pixels = pack_prompts(examples, tokenizer.pad_id, (size, size, 3))
    before, start = engine_stats(), time.perf_counter()
    out = generate(config, params, ids, pixels, attention_mask=mask,
                   max_new_tokens=options.max_new_tokens, temperature=options.temperature,
                   top_p=options.top_p, top_k=options.top_k,
                   repetition_penalty=options.repetition_penalty,
                   num_samples=options.num_samples,
                   eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id, seed=seed,
                   sample_ids=np.asarray([e.uid for e in examples], np.int32), mesh=mesh,
                   rules=rules, slots=slots)
    from r1v2_jax.sharding.host import to_host  # every row on every process

    tokens, logps = to_host(out.tokens), to_host(out.logprobs)
    lengths, truncated = to_host(out.lengths), to_host(out.truncated)
    seconds, after = time.perf_counter() - start, engine_stats()
    if (tokens[np.arange(options.max_new_tokens)[None, :] < lengths[:, None]]
            == config.image_token_id).any():
        raise ValueError("a completion holds the image placeholder token: it would be taken "
                         "for an image slot when scored")
    groups, cut = RolloutGroups(), 0
    for b, example in enumerate(examples):
        group = []
        for g in range(options.num_samples):
            row = b * options.num_samples + g
            n = int(lengths[row])
            reason = "length" if truncated[row] else "stop_token"
            keep = stop_string_cut(lambda t: tokenizer.decode(t, skip_special_tokens=False),
                                   tokens[row, :n].tolist(), options.stop_strings)
            if keep is not None and (keep < n or reason == "length"):
                n, reason, cut = keep, "stop_string", cut + 1
            completion = tokens[row, :n].astype(np.int32)
            text_ids = completion[:-1] if n and completion[-1] == tokenizer.eos_id else completion
            response = response_of(tokenizer.decode(text_ids, skip_special_tokens=False), prompt)
            group.append(Sample(example, completion, logps[row, :n].astype(np.float32), response,
                                reason == "length", policy_version=policy_version,
                                stop_reason=reason))
        groups.append(group)
    row_steps = after.row_steps - before.row_steps
    groups.metrics = {
        "rollout/decode_tokens_per_s": float(lengths.sum()) / seconds,
        "rollout/slot_occupancy": (after.live_row_steps - before.live_row_steps) / max(row_steps, 1),
        "rollout/generate_seconds": seconds,
        "rollout/image_tokens": float(image_tokens),
        "rollout/stop_string_rate": cut / max(len(lengths), 1)}
    flat = [s for g in groups for s in g]
    r = score([s.example for s in flat], [s.response for s in flat])
    for i, s in enumerate(flat):
        s.reward, s.accuracy, s.format = float(r["reward"][i]), float(r["accuracy"][i]), float(r["format"][i])
        s.hallucinated = bool(r["hallucinated"][i])
    return groups
