"""Device arrays to host NumPy, on one process or many.

With several JAX processes an array sharded over the mesh spans devices this process
cannot read (`np.asarray` raises). Host-side code (rewards, the SSB, batching) needs every
row on every process, so such arrays are all-gathered; everything else is a plain copy.
"""

from __future__ import annotations

import jax
import numpy as np


def to_host(x) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
