"""Held-out evaluation: greedy responses scored by the same reward rules as training."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from r1v2_jax.data.prompts import PromptConfig
from r1v2_jax.data.tokenizer import Tokenizer
from r1v2_jax.rl.examples import PromptExample
from r1v2_jax.rl.rollout import SamplingOptions, rollout


def evaluate(config, params, examples: Sequence[PromptExample], *, tokenizer: Tokenizer,
             prompt: PromptConfig, max_new_tokens: int, batch_size: int,
             score: Callable[[PromptExample, str], dict[str, Any]]) -> dict[str, float]:
    """accuracy, format rate and hallucination rate of greedy decoding (pass@1)."""
    options = SamplingOptions(num_samples=1, max_new_tokens=max_new_tokens, temperature=0.0)
    acc, fmt, hal, lens = [], [], [], []
    for i in range(0, len(examples), batch_size):
        chunk = list(examples[i:i + batch_size])
        # keep the batch shape fixed so evaluation compiles once
        padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
        groups = rollout(config, params, padded, options, tokenizer=tokenizer, prompt=prompt,
                         seed=0, policy_version=0, score=score)
        for (s,) in groups[:len(chunk)]:
            acc.append(s.accuracy)
            fmt.append(s.format)
            hal.append(float(s.hallucinated))
            lens.append(len(s.completion_ids))
    return {"eval_accuracy": float(np.mean(acc)), "eval_format_rate": float(np.mean(fmt)),
            "eval_hallucination_rate": float(np.mean(hal)),
            "eval_response_len": float(np.mean(lens))}
