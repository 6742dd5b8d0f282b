"""Per-token importance weights of an update batch (host side): rollout correction of the
behaviour log-probs against the trainer's log-probs (`losses.rollout_correction`), times
the SSB's per-sequence weights of replayed samples when present.

Rejected tokens (rs_level) leave the loss mask, as verl's modified response mask: the
trainer passes `correction_terms`' mask to `batching.grpo_batch(loss_mask=)`, so they
count in no denominator and no KL term. IS weights (`is_mode` truncate / mask) multiply
the policy term only; a masked-IS weight of 0 keeps its token in the denominators (TRL's
`vllm_importance_sampling_mode` *_mask).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from r1v2_jax.losses import rollout_correction
from r1v2_jax.rl.rollout import Sample


# one compiled program per run (shapes and options are fixed), not ~50 eager ops per step
_correction = jax.jit(rollout_correction, static_argnames=(
    "is_level", "is_threshold", "is_mode", "rs_level", "rs_threshold", "rs_threshold_lower"))


def correction_terms(samples: Sequence[Sample], trainer_logps: np.ndarray, rc_cfg,
                     seq_weights: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """trainer_logps: [N, T-1] scored like the update batch (target t+1 at column t).
    Returns (IS weights [N, T-1] fp32 times the SSB's per-sequence seq_weights, loss mask
    [N, T-1] fp32: 1 on completion tokens that rejection sampling keeps, metrics)."""
    n, width = trainer_logps.shape
    behaviour = np.zeros((n, width), np.float32)
    mask = np.zeros((n, width), np.float32)
    for i, s in enumerate(samples):
        start = len(s.example.prompt_ids) - 1
        behaviour[i, start:start + len(s.behaviour_logps)] = s.behaviour_logps
        mask[i, start:start + len(s.behaviour_logps)] = 1.0
    rc = dict(rc_cfg)
    weights, kept, metrics = _correction(
        jnp.asarray(trainer_logps, jnp.float32), jnp.asarray(behaviour), jnp.asarray(mask),
        is_level=rc.get("is_level"), is_threshold=float(rc.get("is_threshold", 2.0)),
        is_mode=rc.get("is_mode", "truncate"), rs_level=rc.get("rs_level"),
        rs_threshold=float(rc.get("rs_threshold", 2.0)),
        rs_threshold_lower=None if rc.get("rs_threshold_lower") is None else float(rc["rs_threshold_lower"]))
    w = np.asarray(weights)
    if seq_weights is not None:
        w = w * np.asarray(seq_weights, np.float32)[:, None]
    return (w.astype(np.float32), np.asarray(kept, np.float32),
            {k: float(v) for k, v in metrics.items()})


def correction_weights(samples: Sequence[Sample], trainer_logps: np.ndarray, rc_cfg,
                       seq_weights: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """(weights, metrics) of `correction_terms` with rejected tokens' weights zeroed: the
    weights alone, for callers that do not pack the loss mask."""
    w, keep, metrics = correction_terms(samples, trainer_logps, rc_cfg, seq_weights)
    return w * keep, metrics
