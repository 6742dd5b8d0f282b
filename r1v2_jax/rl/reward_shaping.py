"""Host-side reward shaping of fresh samples before their advantages (registry
`REWARD_SHAPERS`): DAPO's soft overlong punishment, and `mask_truncated_completions`."""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from r1v2_jax.losses import REWARD_SHAPERS
from r1v2_jax.rl.rollout import Sample


def apply_overlong(samples: Sequence[Sample], overlong_cfg, max_new_tokens: int) -> dict[str, float]:
    """reward += overlong_penalty(len, max_new_tokens, buffer_len, penalty_factor) (DAPO eq. 13:
    0 up to max - buffer tokens, a linear ramp to -1 at max). Returns its mean as a metric."""
    if not overlong_cfg or not overlong_cfg.get("enabled", False):
        return {}
    lengths = np.asarray([len(s.completion_ids) for s in samples], np.int32)
    penalty = np.asarray(REWARD_SHAPERS.get("overlong", "config.grpo.overlong")(
        jnp.asarray(lengths), int(max_new_tokens), int(overlong_cfg["buffer_len"]),
        penalty_factor=float(overlong_cfg.get("penalty_factor", 1.0))))
    for s, p in zip(samples, penalty):
        s.reward = float(s.reward + p)
    return {"overlong_penalty_mean": float(penalty.mean())}


def mask_truncated(samples: Sequence[Sample]) -> None:
    """TRL `mask_truncated_completions`, advantage side: a completion cut at max_new_tokens
    teaches nothing about its ending. Its advantage is set to 0 after the group statistics
    (which still include it, as in TRL), so the SSB neither counts it as effective nor
    buffers it. The loss side is `truncation_keep`: the trainer removes its tokens from
    the loss mask, hence from every denominator and the KL term, as TRL's completion mask."""
    for s in samples:
        if s.truncated:
            s.advantage = 0.0


def truncation_keep(samples: Sequence[Sample]) -> np.ndarray:
    """[N] fp32: 0 for a truncated completion, 1 otherwise (`grpo_batch(loss_mask=)`)."""
    return np.asarray([0.0 if s.truncated else 1.0 for s in samples], np.float32)
