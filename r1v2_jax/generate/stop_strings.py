"""Stop strings, applied on the host after decoding.

A row stops at the first token whose decoded prefix contains one of the strings (what
transformers' `stop_strings` does while decoding). The engine decodes token ids only, so
the cut is made afterwards: the tokens before it are the very tokens an on-device stop
would have produced (each token's sampling key depends only on its sample and step), and
the compute spent past the cut is the price.
"""

from __future__ import annotations

from typing import Callable, Sequence


def stop_string_cut(decode: Callable[[Sequence[int]], str], tokens: Sequence[int],
                    stops: Sequence[str]) -> int | None:
    """The number of tokens to keep: the shortest prefix whose text contains a stop
    string (the completing token included), or None when no stop string occurs."""
    stops = [s for s in stops if s]
    if not stops or not any(s in decode(tokens) for s in stops):
        return None
    lo, hi = 1, len(tokens)  # invariant: prefix hi contains a stop string
    while lo < hi:  # containment only grows with the prefix: bisect
        mid = (lo + hi) // 2
        if any(s in decode(tokens[:mid]) for s in stops):
            hi = mid
        else:
            lo = mid + 1
    return hi
