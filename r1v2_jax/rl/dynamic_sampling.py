"""DAPO dynamic sampling: draw prompt batches until the update holds `num_groups` groups
whose rewards vary (a group of equal rewards has zero advantage and no policy gradient).

Every round draws a full batch of prompts (one static rollout shape, one compile), keeps
its groups with variance and stops once enough are kept; the surplus of the last round is
dropped (verl's DAPO recipe: `filter_groups`, `max_num_gen_batches`). If `max_rounds` pass
without enough, the batch is completed with the most recent zero-variance groups (they add
no policy gradient; the SSB, when on, refills their slots) and `ds_filled_flat_groups` says
how many. Complements the SSB, which refills zero-advantage slots from a replay buffer.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from r1v2_jax.rl.rollout import Sample

Groups = list[list[Sample]]


def has_variance(group: Sequence[Sample], metric: str = "reward") -> bool:
    values = np.asarray([getattr(s, metric) for s in group], np.float64)
    return bool(values.max() != values.min())


def collect_groups(draw: Callable[[int], Groups], num_groups: int, *, max_rounds: int,
                   metric: str = "reward") -> tuple[Groups, dict[str, float]]:
    """draw(round) -> a fresh batch of groups. Returns (num_groups groups in draw order,
    metrics): ds_rounds, ds_generated_groups, ds_kept_groups (with variance, in the batch),
    ds_filled_flat_groups, ds_rollouts_per_kept_group (all rollouts of the step / kept
    groups: the cost of a useful group) and ds_extra_rollouts (beyond one batch)."""
    if max_rounds < 1:
        raise ValueError(f"dynamic_sampling: max_rounds must be >= 1, got {max_rounds}")
    kept: Groups = []
    flat: Groups = []
    generated = rollouts = rounds = 0
    while len(kept) < num_groups and rounds < max_rounds:
        groups = draw(rounds)
        rounds += 1
        generated += len(groups)
        rollouts += sum(len(g) for g in groups)
        for g in groups:
            (kept if has_variance(g, metric) else flat).append(g)
    kept = kept[:num_groups]
    filled = num_groups - len(kept)
    batch = kept + flat[len(flat) - filled:] if filled else kept
    per_batch = rollouts / max(rounds, 1)
    return batch, {
        "ds_rounds": float(rounds),
        "ds_generated_groups": float(generated),
        "ds_kept_groups": float(len(kept)),
        "ds_filled_flat_groups": float(filled),
        "ds_rollouts_per_kept_group": rollouts / max(len(kept), 1),
        "ds_extra_rollouts": float(rollouts - per_batch),
    }
