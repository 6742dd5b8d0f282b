"""Logical axis names -> mesh axes.

Parameters are created with logical axis names (see docs/PARAMS.md); a rule table, kept
in config (`config.sharding.rules`), maps each name onto zero or more mesh axes
(`data`, `fsdp`, `tensor`). The default table is MaxText-like: weights are split over
`fsdp` along the model dimension and over `tensor` along heads / MLP / vocab; activations
are split over (`data`, `fsdp`) along the batch, and the residual stream also over `tensor`
along the tokens (see activations.py).

A logical axis whose size is not divisible by its mesh axes is replicated instead (e.g.
InternViT-6B's 25 heads on a tensor axis of 8): correctness never depends on the table.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

Rules = Sequence[tuple[str, Any]]

DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    # activations
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("residual_length", "tensor"),  # sequence parallelism of the residual stream
    # language model
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("embed_out", None),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("layers", None),
    # adapter
    ("adapter_in", "tensor"),
    # vision encoder
    ("vit_embed", "fsdp"),
    ("vit_heads", "tensor"),
    ("vit_kv", None),
    ("vit_mlp", "tensor"),
)


def rules_from_config(rules: Any) -> tuple[tuple[str, Any], ...]:
    """Accepts a sequence of (name, mesh axes) pairs (lists from ml_collections included)."""
    out = []
    for item in rules:
        name, axes = item
        if isinstance(axes, list):
            axes = tuple(axes)
        out.append((str(name), axes))
    return tuple(out)


def _spec_for(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: Rules) -> P:
    table = dict(rules)
    used: set[str] = set()
    parts: list[Any] = []
    for name, size in zip(names, shape):
        axes = table.get(name) if name is not None else None
        if axes is None:
            parts.append(None)
            continue
        axes = (axes,) if isinstance(axes, str) else tuple(axes)
        # Drop mesh axes already used by an earlier dimension, or of size 1.
        axes = tuple(a for a in axes if a not in used and mesh.shape[a] > 1)
        n = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
        if not axes or size % n:
            parts.append(None)
            continue
        used.update(axes)
        parts.append(axes[0] if len(axes) == 1 else axes)
    return P(*parts)


def logical_specs(boxed_params: Any, mesh: Mesh, rules: Rules) -> Any:
    """PartitionSpecs for a pytree of `nn.LogicallyPartitioned` boxes (or their shapes)."""

    def one(x):
        if isinstance(x, nn.LogicallyPartitioned):
            return _spec_for(x.names, x.value.shape, mesh, rules)
        return P()

    return jax.tree.map(one, boxed_params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def param_shardings(config, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for the model's parameter tree, from abstract shapes only."""
    from r1v2_jax.models.vlm import abstract_params

    specs = logical_specs(abstract_params(config, boxed=True), mesh, rules)
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs)


def batch_sharding(mesh: Mesh, rules: Rules, shape: Sequence[int], batch_axis: int = 0
                   ) -> NamedSharding:
    """Shards axis `batch_axis` (the batch) of an activation over the batch mesh axes (or
    replicates it when the batch does not divide). Micro-batched arrays [M, b, ...] use
    batch_axis=1: every micro-batch is split over the devices."""
    names = [None] * len(shape)
    names[batch_axis] = "batch"
    return NamedSharding(mesh, _spec_for(names, shape, mesh, rules))


def batch_shardings(tree: Any, mesh: Mesh, rules: Rules, batch_axis: int = 0) -> Any:
    """`batch_sharding` for every array (or ShapeDtypeStruct) of a pytree; None stays None."""
    return jax.tree.map(lambda x: batch_sharding(mesh, rules, x.shape, batch_axis), tree)


KV_CACHE_AXES = ("layers", "batch", "length", "kv_heads", "kv")


def kv_cache_sharding(mesh: Mesh, rules: Rules, shape: Sequence[int]) -> NamedSharding:
    """Sharding of a KV cache array, stacked [L, B, S, Hkv, D] or one layer's [B, S, Hkv, D]
    (the generation engine's form): rows over the batch axes, KV heads over `tensor` (as the
    k/v projections that write it), slots and head dimension whole."""
    if len(shape) not in (4, 5):
        raise ValueError(f"a KV cache is [L, B, S, Hkv, D] or [B, S, Hkv, D], got {tuple(shape)}")
    names = KV_CACHE_AXES[len(KV_CACHE_AXES) - len(shape):]
    return NamedSharding(mesh, _spec_for(names, shape, mesh, rules))
