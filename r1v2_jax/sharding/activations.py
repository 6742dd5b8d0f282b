"""Activation sharding constraints, applied from outside the model.

Sharding only the parameters and the inputs leaves the partitioner free to choose how
activations are laid out, and it may choose badly: with weights split over `fsdp` along
their input dimension it contracts over the split dimension and all-reduces whole
activations, instead of gathering the weights (FSDP) and keeping the batch split.
Constraining every projection's output to ("batch", "length", *its logical output axes)
under the same rule table (MaxText's layout) forces the intended plan: batch over
(data, fsdp), heads / MLP / vocab over tensor, weights gathered layer by layer. Outputs
that form the residual stream use "residual_length" for their token axis; the default
rules map it to `tensor` (Megatron-style sequence parallelism), so the residual stream,
its norms and the per-layer activations kept for the backward pass are split over tokens
instead of repeated on every tensor shard.

`activation_sharding(mesh, rules)` does this with Flax's method interception at trace
time, so the model code stays free of mesh concerns; trace (jit / lower) the step inside it.
"""

from __future__ import annotations

import contextlib

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding

from r1v2_jax.models.layers import Dense
from r1v2_jax.models.qwen2 import Embedding
from r1v2_jax.sharding.rules import Rules, _spec_for

# Projections that write the residual stream (and the embeddings that start it): their
# outputs are laid out along "residual_length" (sequence parallelism when it maps to a mesh
# axis: norms and residual adds, and the activations remat keeps, are split over tokens).
RESIDUAL_FEATURES = (("embed",), ("vit_embed",), ("embed_out",))


def activation_names(ndim: int, feature_axes: tuple) -> tuple:
    """Logical names of an activation whose trailing axes are `feature_axes`."""
    lead = ndim - len(feature_axes)
    if lead < 1:
        return (None,) * ndim
    length = "residual_length" if tuple(feature_axes) in RESIDUAL_FEATURES else "length"
    return ("batch",) + (length,) * (lead - 1) + tuple(feature_axes)


def constrain(x: jax.Array, names: tuple, mesh: Mesh, rules: Rules) -> jax.Array:
    spec = _spec_for(names, x.shape, mesh, rules)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules: Rules):
    """Within the block, projection and embedding outputs are sharding-constrained."""

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name != "__call__":
            return out
        module = context.module
        if isinstance(module, Dense):
            return constrain(out, activation_names(out.ndim, module.out_axes), mesh, rules)
        if isinstance(module, Embedding):
            return constrain(out, activation_names(out.ndim, ("embed",)), mesh, rules)
        return out

    with nn.intercept_methods(interceptor):
        yield
