"""Meshes, the logical-axis rule table, and parameters created on their shards."""

from r1v2_jax.sharding.mesh import (AXES, make_mesh, mesh_from_config, parse_axis_sizes,
                                    resolve_axis_sizes)
from r1v2_jax.sharding.params import (abstract_opt_state, abstract_sharded_params, cast_abstract,
                                      opt_state_shardings, sharded_init_params, sharded_opt_init,
                                      with_shardings)
from r1v2_jax.sharding.activations import activation_sharding
from r1v2_jax.sharding.steps import (compile_update, shardings_of,
                                     traced_with_activation_sharding)
from r1v2_jax.sharding.rules import (DEFAULT_RULES, KV_CACHE_AXES, batch_sharding, batch_shardings,
                                     kv_cache_sharding, logical_specs, param_shardings,
                                     rules_from_config)

__all__ = ["AXES", "make_mesh", "mesh_from_config", "parse_axis_sizes", "resolve_axis_sizes",
           "DEFAULT_RULES", "KV_CACHE_AXES", "batch_sharding", "batch_shardings",
           "kv_cache_sharding", "logical_specs", "param_shardings", "rules_from_config",
           "abstract_opt_state", "abstract_sharded_params", "cast_abstract",
           "opt_state_shardings", "sharded_init_params", "sharded_opt_init", "with_shardings",
           "compile_update", "shardings_of", "activation_sharding",
           "traced_with_activation_sharding"]
