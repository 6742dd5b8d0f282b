"""Per-channel parameters are applied on [tokens, channels] rows (`layers.as_rows`).

Why it matters: with a batch of one, the gradient of a parameter broadcast over [1, T, C]
is a reduction over T of a 3-D array, which XLA's CPU backend runs ~75x slower than the
same reduction of [T, C] (docs/benchmarks.md). The tests look at the compiled backward
pass: every reduction that produces a parameter's gradient must reduce a 2-D array.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import meta

from r1v2_jax.models.layers import Dense, LayerNorm, RMSNorm, as_rows


def _param_grad_reductions(module, x):
    params = meta.unbox(module.init(jax.random.key(0), x))["params"]
    w = jnp.asarray(np.random.default_rng(1).standard_normal(
        jax.eval_shape(lambda: module.apply({"params": params}, x)).shape), jnp.float32)
    grad = jax.jit(jax.grad(lambda p: jnp.sum(module.apply({"params": p}, x) * w)))
    hlo = grad.lower(params).as_text()  # StableHLO: before XLA may reshape anything
    return re.findall(r"stablehlo\.reduce\(.*?\) applies stablehlo\.add across dimensions = "
                      r"\[([0-9, ]+)\] : \((tensor<[0-9x]+xf32>)", hlo)


def test_norm_and_bias_gradients_reduce_two_dimensional_rows():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 6, 5)), jnp.float32)
    for module in (RMSNorm(eps=1e-5), LayerNorm(eps=1e-5),
                   Dense((2, 3), in_axes=("embed",), out_axes=("heads", "kv"))):
        reductions = _param_grad_reductions(module, x)
        assert reductions, f"{type(module).__name__}: no parameter-gradient reduction found"
        for dims, operand in reductions:  # the statistics' reductions are over rows too
            assert operand.count("x") == 2, (
                f"{type(module).__name__} reduces {operand} over [{dims}], not [T, C] rows")
        assert "0" in {d.strip() for d, _ in reductions}, "no reduction over the rows"


def test_as_rows_keeps_the_leading_axes():
    x = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4)
    out = as_rows(lambda rows: rows[:, :2] * 2.0, x)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(x[..., :2] * 2.0))
