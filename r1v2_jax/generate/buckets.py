"""Static-shape buckets: prompt length, number of new tokens and image tiles are padded up
to the next bucket so that a long run compiles a handful of programs, not one per call.

A bucket list is an increasing tuple of sizes, or None for "powers of two from `minimum`"
(unbounded). A size larger than the last bucket of an explicit list is an error.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class Buckets:
    """Bucket lists of the generation engine (None = powers of two from the minimum)."""

    prompt: tuple[int, ...] | None = None
    new_tokens: tuple[int, ...] | None = None
    tiles: tuple[int, ...] | None = None
    min_prompt: int = 16
    min_new_tokens: int = 16
    min_tiles: int = 1

    def __post_init__(self):
        for name in ("prompt", "new_tokens", "tiles"):
            values = getattr(self, name)
            if values is None:
                continue
            values = tuple(int(v) for v in values)
            if not values or any(v < 1 for v in values) or list(values) != sorted(set(values)):
                raise ValueError(f"Buckets.{name} must be a strictly increasing list of "
                                 f"positive sizes, got {values}")
            object.__setattr__(self, name, values)


def bucket_size(n: int, buckets: Sequence[int] | None, minimum: int, what: str) -> int:
    """The smallest bucket >= n."""
    if n < 0:
        raise ValueError(f"{what} must be >= 0, got {n}")
    if buckets is None:
        size = max(1, minimum)
        while size < n:
            size *= 2
        return size
    for size in buckets:
        if size >= n:
            return size
    raise ValueError(f"{what} = {n} exceeds the largest bucket {buckets[-1]} of {tuple(buckets)}")
