"""Held-out evaluation: responses scored by the same reward rules as training.

`evaluate` decodes greedily (pass@1, the demo's headline accuracy); `evaluate_sampled`
draws k responses per prompt at a temperature and reports their mean accuracy and pass@k.
Side by side they show what RL changed: sharpening (sampled accuracy rises towards the
greedy one while pass@k falls) versus a better policy (greedy accuracy rises).
`answer_prior_accuracy` is the blind baseline: the commonest training answer per question.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from r1v2_jax.data.prompts import PromptConfig
from r1v2_jax.data.tokenizer import Tokenizer
from r1v2_jax.rl.examples import PromptExample
from r1v2_jax.rl.rollout import Sample, SamplingOptions, rollout


def _scored_groups(config, params, examples: Sequence[PromptExample], options: SamplingOptions,
                   *, tokenizer: Tokenizer, prompt: PromptConfig, batch_size: int, seed: int,
                   score: Callable[..., dict[str, Any]]) -> Iterator[list[Sample]]:
    for i in range(0, len(examples), batch_size):
        chunk = list(examples[i:i + batch_size])
        # keep the batch shape fixed so evaluation compiles once
        padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
        groups = rollout(config, params, padded, options, tokenizer=tokenizer, prompt=prompt,
                         seed=seed, policy_version=0, score=score)
        yield from groups[:len(chunk)]


def evaluate(config, params, examples: Sequence[PromptExample], *, tokenizer: Tokenizer,
             prompt: PromptConfig, max_new_tokens: int, batch_size: int,
             score: Callable[[PromptExample, str], dict[str, Any]]) -> dict[str, float]:
    """accuracy, format rate and hallucination rate of greedy decoding (pass@1)."""
    options = SamplingOptions(num_samples=1, max_new_tokens=max_new_tokens, temperature=0.0)
    acc, fmt, hal, lens = [], [], [], []
    for (s,) in _scored_groups(config, params, examples, options, tokenizer=tokenizer,
                               prompt=prompt, batch_size=batch_size, seed=0, score=score):
        acc.append(s.accuracy)
        fmt.append(s.format)
        hal.append(float(s.hallucinated))
        lens.append(len(s.completion_ids))
    return {"eval_accuracy": float(np.mean(acc)), "eval_format_rate": float(np.mean(fmt)),
            "eval_hallucination_rate": float(np.mean(hal)),
            "eval_response_len": float(np.mean(lens))}


def evaluate_sampled(config, params, examples: Sequence[PromptExample], *, tokenizer: Tokenizer,
                     prompt: PromptConfig, max_new_tokens: int, batch_size: int,
                     num_samples: int, temperature: float, seed: int = 0,
                     score: Callable[..., dict[str, Any]]) -> dict[str, float]:
    """k = num_samples responses per prompt at `temperature`:
    eval_sampled_accuracy = mean over prompts and samples of the accuracy reward;
    eval_pass_at_k = share of prompts with at least one correct sample (accuracy >= 1)."""
    if num_samples < 1 or not temperature > 0:
        raise ValueError(f"evaluate_sampled needs num_samples >= 1 and temperature > 0, got "
                         f"{num_samples} and {temperature}")
    options = SamplingOptions(num_samples=num_samples, max_new_tokens=max_new_tokens,
                              temperature=temperature)
    per_prompt = batch_size // num_samples or 1  # about batch_size sampled rows per call
    accs = np.asarray([[s.accuracy for s in group] for group in _scored_groups(
        config, params, examples, options, tokenizer=tokenizer, prompt=prompt,
        batch_size=per_prompt, seed=seed, score=score)], np.float64)
    return {"eval_sampled_accuracy": float(accs.mean()),
            "eval_pass_at_k": float((accs >= 1.0).any(axis=1).mean()),
            "eval_num_samples": float(num_samples)}


def answer_prior_accuracy(train: Sequence[PromptExample], heldout: Sequence[PromptExample]
                          ) -> dict[str, float]:
    """Accuracy of answering without the image: the blind baseline a policy must beat.

    Each held-out question gets the answer most often given to the same question text in
    `train` (to an unseen question: the commonest answer of its answer type; ties go to the
    answer seen first). Exact string match, which the demo's typed answers allow.
    """
    by_question: dict[str, Counter] = defaultdict(Counter)
    by_type: dict[str, Counter] = defaultdict(Counter)
    for e in train:
        by_question[e.question][e.answer.strip()] += 1
        by_type[e.answer_type][e.answer.strip()] += 1
    hits = []
    for e in heldout:
        votes = by_question.get(e.question) or by_type.get(e.answer_type)
        guess = votes.most_common(1)[0][0] if votes else None
        hits.append(guess == e.answer.strip())
    return {"eval_accuracy": float(np.mean(hits)) if hits else float("nan")}
