"""The machine's measured fp32 matmul throughput: the practical limit of a dense model step.

C = A @ B for square fp32 matrices of side n costs 2n^3 FLOPs; throughput is that over the
median time of `repeats` products after a warm-up, with JAX (XLA), NumPy (its BLAS) and
PyTorch (its BLAS, all cores), each measured in the same process.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (compilation, thread pools)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_flops_per_s(n: int = 2048, repeats: int = 5, seed: int = 0) -> dict[str, float]:
    """{"jax": FLOP/s, "numpy": FLOP/s, "torch": FLOP/s (absent without torch), "limit": max}."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flops = 2.0 * n ** 3
    ja, jb = jax.device_put(a), jax.device_put(b)
    matmul = jax.jit(jnp.matmul)
    out = {"n": n,
           "jax": flops / _median_seconds(lambda: matmul(ja, jb).block_until_ready(), repeats),
           "numpy": flops / _median_seconds(lambda: a @ b, repeats)}
    try:
        import torch
    except ImportError:
        pass
    else:
        torch.set_num_threads(os.cpu_count() or 1)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        out["torch"] = flops / _median_seconds(lambda: ta @ tb, repeats)
    out["limit"] = max(v for k, v in out.items() if k in ("jax", "numpy", "torch"))
    return out
