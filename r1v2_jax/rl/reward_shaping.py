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
    """TRL `mask_truncated_completions`: a completion cut at max_new_tokens teaches nothing
    about its ending. Here its advantage is set to 0 (after the group statistics, which
    still include it, as in TRL), so its policy term is exactly zero; unlike TRL's masked
    completion it still counts in the loss denominators and the KL term."""
    for s in samples:
        if s.truncated:
            s.advantage = 0.0
