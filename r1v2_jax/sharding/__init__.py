"""Meshes and the logical-axis rule table."""

from r1v2_jax.sharding.mesh import AXES, make_mesh, mesh_from_config, resolve_axis_sizes
from r1v2_jax.sharding.rules import (DEFAULT_RULES, batch_sharding, logical_specs, param_shardings,
                                     rules_from_config)

__all__ = ["AXES", "make_mesh", "mesh_from_config", "resolve_axis_sizes", "DEFAULT_RULES",
           "batch_sharding", "logical_specs", "param_shardings", "rules_from_config"]
