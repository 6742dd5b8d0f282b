"""Parameters and optimizer state placed on their shards.

`sharded_init_params` jits the initializer with `out_shardings`, so every array is
created directly on its shards (no host or device ever holds the whole model).
`abstract_sharded_params` gives the same tree as `jax.ShapeDtypeStruct`s with shardings,
for ahead-of-time compilation (`r1v2 plan`) and for restoring checkpoints straight into
shards (`r1v2_jax.convert.load_jax_checkpoint(dir, shardings=...)`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from r1v2_jax.models.vlm import abstract_params, init_params
from r1v2_jax.sharding.rules import Rules, param_shardings


def sharded_init_params(config, mesh: Mesh, rules: Rules, rng: jax.Array) -> dict:
    """Random parameters of `config` (same values as `init_params(config, rng)`), each
    array created on its shards of `mesh` according to `rules`."""
    shardings = param_shardings(config, mesh, rules)
    return jax.jit(lambda r: init_params(config, r), out_shardings=shardings)(rng)


def with_shardings(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `tree` (arrays or structs) carrying `shardings`."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


def abstract_sharded_params(config, mesh: Mesh, rules: Rules) -> dict:
    """The parameter tree as sharded `jax.ShapeDtypeStruct`s; nothing is allocated."""
    return with_shardings(abstract_params(config), param_shardings(config, mesh, rules))


def cast_abstract(tree: Any, dtype) -> Any:
    """Floating leaves of an abstract tree cast to `dtype` (shardings kept)."""

    def one(x):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            return x
        return jax.ShapeDtypeStruct(x.shape, jnp.dtype(dtype), sharding=x.sharding)

    return jax.tree.map(one, tree)


def opt_state_shardings(optimizer: optax.GradientTransformation, abstract_trainable: Any,
                        mesh: Mesh) -> Any:
    """Shardings of `optimizer.init(trainable)`: per-parameter statistics (Adam moments)
    follow their parameter's sharding; everything else (step counts) is replicated.

    abstract_trainable: the trainable tree as ShapeDtypeStructs with shardings.
    """
    state = jax.eval_shape(optimizer.init, abstract_trainable)
    shardings = jax.tree.map(lambda x: x.sharding, abstract_trainable)
    replicated = NamedSharding(mesh, P())
    return optax.tree_map_params(optimizer, lambda _, s: s, state, shardings,
                                 transform_non_params=lambda _: replicated)


def abstract_opt_state(optimizer: optax.GradientTransformation, abstract_trainable: Any,
                       mesh: Mesh) -> Any:
    """`optimizer.init(trainable)` as sharded ShapeDtypeStructs."""
    state = jax.eval_shape(optimizer.init, abstract_trainable)
    return with_shardings(state, opt_state_shardings(optimizer, abstract_trainable, mesh))


def sharded_opt_init(optimizer: optax.GradientTransformation, trainable: Any, mesh: Mesh) -> Any:
    """`optimizer.init(trainable)` created directly on the shards of its parameters."""
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            trainable)
    return jax.jit(optimizer.init,
                   out_shardings=opt_state_shardings(optimizer, abstract, mesh))(trainable)
