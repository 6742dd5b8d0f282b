"""Host-side packing of token sequences and image tiles into the static-shape arrays of an
update step: sequences right-padded to `seq_len`, tiles zero-padded to `tiles_per_micro`
per micro-batch, rows grouped into micro-batches, so a jitted step compiles once per run.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pack_sequences(prompts: Sequence[np.ndarray], completions: Sequence[np.ndarray],
                   seq_len: int, pad_id: int):
    """(ids [N, T], attention_mask [N, T], completion_mask [N, T-1]); completion_mask[t]
    marks that target token t+1 is a completion token."""
    n = len(prompts)
    ids = np.full((n, seq_len), pad_id, np.int32)
    attn = np.zeros((n, seq_len), np.int32)
    comp = np.zeros((n, seq_len - 1), np.float32)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        total = len(p) + len(c)
        if total > seq_len:
            raise ValueError(f"sequence of {total} tokens exceeds seq_len={seq_len}")
        ids[i, :len(p)], ids[i, len(p):total] = p, c
        attn[i, :total] = 1
        comp[i, len(p) - 1:total - 1] = 1.0
    return ids, attn, comp


def pack_tiles(per_sample: Sequence[np.ndarray], tiles_per_micro: int, micro: int,
               image_shape: tuple[int, int, int]) -> np.ndarray:
    """[M, tiles_per_micro, H, W, 3]: each micro-batch's tiles in sample order, zero-padded."""
    m = len(per_sample) // micro
    out = np.zeros((m, tiles_per_micro) + tuple(image_shape), np.float32)
    for j in range(m):
        chunk = [t for t in per_sample[j * micro:(j + 1) * micro] if len(t)]
        tiles = np.concatenate(chunk) if chunk else np.zeros((0,) + tuple(image_shape), np.float32)
        if len(tiles) > tiles_per_micro:
            raise ValueError(f"micro-batch {j} has {len(tiles)} image tiles, more than "
                             f"tiles_per_micro={tiles_per_micro}; raise it in the config")
        out[j, :len(tiles)] = tiles
    return out


def to_micro(x: np.ndarray, micro: int) -> np.ndarray:
    if len(x) % micro:
        raise ValueError(f"batch of {len(x)} is not a multiple of micro_batch_size={micro}")
    return x.reshape((len(x) // micro, micro) + x.shape[1:])
