"""Host-side packing of samples into the static-shape arrays of an update step.

Every update batch has the same shapes whatever its content: sequences are right-padded to
`seq_len` (prompt bucket + max new tokens) and image tiles to `tiles_per_micro` per
micro-batch, so the jitted step compiles once per run.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from r1v2_jax.rl.grpo_step import GRPOBatch
from r1v2_jax.rl.rollout import Sample
# the generic packing lives in the train layer (SFT uses it too); re-exported here
from r1v2_jax.train.packing import pack_sequences, pack_tiles, to_micro  # noqa: F401


def grpo_batch(samples: Sequence[Sample], *, seq_len: int, micro: int, tiles_per_micro: int,
               pad_id: int, image_shape: tuple[int, int, int],
               is_weights: np.ndarray | None = None,
               loss_mask: np.ndarray | None = None) -> GRPOBatch:
    """loss_mask: [N] (per sample) or [N, T-1] (per token, aligned with the completion
    mask) 0/1 array multiplied into the completion mask: truncated completions
    (`mask_truncated_completions`) and rejected tokens (rollout correction `rs_level`)
    leave every loss denominator, the KL term and the batch-level selections, as TRL's
    and verl's modified completion / response masks do."""
    ids, attn, comp = pack_sequences([s.example.prompt_ids for s in samples],
                                     [s.completion_ids for s in samples], seq_len, pad_id)
    if loss_mask is not None:
        keep = np.asarray(loss_mask, np.float32)
        keep = keep[:, None] if keep.ndim == 1 else keep
        if keep.shape not in ((len(samples), 1), comp.shape):
            raise ValueError(f"grpo_batch: loss_mask must have shape ({len(samples)},) or "
                             f"{comp.shape}, got {np.shape(loss_mask)}")
        comp = comp * keep
    old = np.zeros_like(comp)
    for i, s in enumerate(samples):
        start = len(s.example.prompt_ids) - 1
        old[i, start:start + len(s.behaviour_logps)] = s.behaviour_logps
    adv = np.asarray([s.advantage for s in samples], np.float32)
    w = np.ones(len(samples), np.float32) if is_weights is None else is_weights.astype(np.float32)
    pixels = None
    if tiles_per_micro:
        pixels = pack_tiles([s.example.pixel_values for s in samples], tiles_per_micro, micro,
                            image_shape)
    return GRPOBatch(to_micro(ids, micro), to_micro(attn, micro), to_micro(comp, micro),
                     to_micro(old, micro), to_micro(adv, micro), to_micro(w, micro), pixels)
