"""The global record order and each host's share of it.

Position k of the endless global stream is record `valid[perm_e[k % n]]` with
e = k // n and perm_e = `records.epoch_order(n, seed, e)` (the permutation the eager
path uses): it depends only on (n, seed, epoch), so every host computes the same order
without talking to the others. Host h of H takes positions h, h + H, h + 2H, ...: its
j-th element is global position j*H + h. The hosts' shares are disjoint, every H*n
consecutive positions cover each record H times, and all hosts take the same number of
records per step, even when n is not a multiple of H (the epoch boundary is crossed
mid-step rather than dropping or padding records).
"""

from __future__ import annotations

import functools
import sys

import numpy as np


@functools.lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    # the same generator as records.epoch_order, kept as an array (no n Python ints)
    return np.random.default_rng([seed, epoch]).permutation(n)


class HostOrder:
    """grain source of (host position j) -> row index; endless unless num_epochs."""

    def __init__(self, valid: np.ndarray, seed: int, process_index: int, process_count: int,
                 num_epochs: int | None = None):
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        self.valid, self.seed = np.asarray(valid, np.int64), int(seed)
        self.h, self.hosts = int(process_index), int(process_count)
        n = len(self.valid)
        self._len = sys.maxsize if num_epochs is None else (n * num_epochs - self.h +
                                                            self.hosts - 1) // self.hosts

    def __len__(self) -> int:
        return self._len

    def global_position(self, j: int) -> int:
        return j * self.hosts + self.h

    def __getitem__(self, j: int) -> int:
        k, n = self.global_position(j), len(self.valid)
        return int(self.valid[_permutation(n, self.seed, k // n)[k % n]])
