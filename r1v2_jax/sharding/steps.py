"""The one way every update step is compiled: by the trainers (SFT, reward model, MPO, GRPO)
and by `r1v2 plan`, so the planner's memory figures describe the program that runs.

`compile_update(fn, mesh=..., state_shardings=(trainable, opt_state), ...)` jits `fn` with
its new state pinned to the shardings it came in with and everything else replicated, the
old state donated, and the tracing done under `activation_sharding(mesh, rules)`
(FSDP-style activation layout, see activations.py). Left to itself the partitioner may pick
other output shardings; the next call would then compile a second program and hold a
second copy of the state. Without a mesh it is `jax.jit` with the same donation.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

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


def compile_update(fn, *, mesh: Mesh | None = None, rules=None,
                   state_shardings: Sequence[Any] | None = None, num_replicated: int = 1,
                   donate_argnums: tuple[int, ...] = ()):
    """jit of an update `fn(...) -> (*state, *replicated)`.

    mesh: None -> plain `jax.jit` (one device, or layouts propagated from the inputs).
    state_shardings: the shardings of the state outputs (e.g. trainable params, optimizer
      state), in output order; required with a mesh. The `num_replicated` outputs after them
      (metrics, the BCO delta) are replicated.
    donate_argnums: the old state's argument positions.
    """
    if mesh is None:
        return jax.jit(fn, donate_argnums=donate_argnums)
    if state_shardings is None:
        raise ValueError("compile_update: state_shardings are required with a mesh")
    replicated = NamedSharding(mesh, P())
    out = tuple(state_shardings) + (replicated,) * num_replicated
    return jax.jit(traced_with_activation_sharding(fn, mesh, rules), out_shardings=out,
                   donate_argnums=donate_argnums)
