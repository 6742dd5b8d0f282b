"""The GRPO / MPO update steps jitted for a mesh: outputs pinned to the inputs' shardings.

Left to itself, the partitioner picks the output shardings of an update; they may differ
from the shardings the state came in with, and the next call then compiles a second
program. Pinning them (and donating the old state) keeps one program and one copy of the
state for the whole run. The steps are traced under `activation_sharding(mesh, rules)`
(FSDP-style activation layout, see activations.py).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from r1v2_jax.sharding.activations import activation_sharding


def shardings_of(tree: Any) -> Any:
    """The shardings of a tree of jax.Arrays or sharded ShapeDtypeStructs."""
    return jax.tree.map(lambda x: x.sharding, tree)


def traced_with_activation_sharding(fn, mesh: Mesh, rules):
    """`fn` whose tracing runs inside `activation_sharding(mesh, rules)`."""

    def wrapped(*args, **kwargs):
        with activation_sharding(mesh, rules):
            return fn(*args, **kwargs)

    # jit names the program after the function (logs, profiles, XLA dumps).
    inner = fn.func if isinstance(fn, functools.partial) else fn
    wrapped.__name__ = getattr(inner, "__name__", "step")
    return wrapped


def sharded_grpo_update(config, opts, optimizer, mesh: Mesh, rules, trainable_shardings: Any,
                        opt_state_shardings: Any, *, compute_dtype=None, donate: bool = True):
    """jit of `rl.grpo_step.grpo_update` whose new trainable params / optimizer state keep
    the given shardings and whose metrics are replicated.
    (frozen, ref_trainable, trainable, opt_state, batch) -> (trainable, opt_state, metrics)."""
    from r1v2_jax.rl.grpo_step import grpo_update

    fn = traced_with_activation_sharding(functools.partial(
        grpo_update, config, opts, optimizer, compute_dtype=compute_dtype), mesh, rules)
    replicated = NamedSharding(mesh, P())
    return jax.jit(fn, out_shardings=(trainable_shardings, opt_state_shardings, replicated),
                   donate_argnums=(2, 3) if donate else ())


def sharded_mpo_update(config, opts, optimizer, mesh: Mesh, rules, trainable_shardings: Any,
                       opt_state_shardings: Any, *, compute_dtype=None, donate: bool = True):
    """jit of `rl.mpo_step.mpo_update`, outputs pinned like `sharded_grpo_update`.
    (frozen, ref_trainable, trainable, opt_state, delta, batch)
      -> (trainable, opt_state, delta, metrics)."""
    from r1v2_jax.rl.mpo_step import mpo_update

    fn = traced_with_activation_sharding(functools.partial(
        mpo_update, config, opts, optimizer, compute_dtype=compute_dtype), mesh, rules)
    replicated = NamedSharding(mesh, P())
    return jax.jit(fn, out_shardings=(trainable_shardings, opt_state_shardings, replicated,
                                      replicated), donate_argnums=(2, 3) if donate else ())
