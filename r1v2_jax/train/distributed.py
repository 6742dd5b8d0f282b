"""Multi-process (multi-host) JAX: start-up, per-process data, host consistency.

Every process runs the same program on its own devices; jitted computations see global
arrays spanning all of them. The pieces here:

  initialize(...)            joins the processes (TPU pod: automatic; SLURM: from the job's
                             environment; otherwise explicit coordinator/count/id); CPU
                             processes exchange data with the "gloo" collectives.
  local_batch_slice(...)     the rows of a global batch this process must load;
  global_batch(...)          assembles global arrays from every process's rows;
  broadcast_from_main(...)   process 0's value, on every process (host decisions);
  assert_same_on_all_processes(...), process_allgather(...): checks and host copies.

A single process (nothing detected, nothing given) is the degenerate case: every helper
works unchanged with process_count() == 1.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
from typing import Any, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P, Sharding

CLUSTER_KINDS = ("auto", "explicit", "slurm", "tpu", "single")


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """How this process joins the others. kind: explicit | slurm | tpu | single."""

    kind: str
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


def _on_tpu_vm() -> bool:
    # libtpu installed and TPU chips visible (/dev/accel* on v4/v5p, vfio on v5e/v6e).
    return (importlib.util.find_spec("libtpu") is not None
            and bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")))


def resolve_cluster(coordinator: str | None = None, num_processes: int | None = None,
                    process_id: int | None = None, *, cluster: str = "auto",
                    env: Mapping[str, str] | None = None, on_tpu_vm: bool | None = None
                    ) -> ClusterSpec:
    """Decides how to start (pure: reads only `env`, default os.environ).

    Order for cluster="auto": explicit flags (a coordinator given) > SLURM job with more
    than one task > TPU VM > single process.
    """
    env = os.environ if env is None else env
    if cluster not in CLUSTER_KINDS:
        raise ValueError(f"cluster must be one of {CLUSTER_KINDS}, got {cluster!r}")
    if cluster == "auto":
        if coordinator is not None:
            cluster = "explicit"
        elif int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in env:
            cluster = "slurm"
        elif on_tpu_vm if on_tpu_vm is not None else _on_tpu_vm():
            cluster = "tpu"
        else:
            cluster = "single"
    if cluster == "explicit":
        missing = [name for name, v in (("coordinator", coordinator),
                                        ("num_processes", num_processes),
                                        ("process_id", process_id)) if v is None]
        if missing:
            raise ValueError(f"explicit multi-process start needs coordinator, num_processes "
                             f"and process_id; missing {missing}")
        if ":" not in coordinator:
            raise ValueError(f"coordinator must be HOST:PORT, got {coordinator!r}")
        if not 0 <= process_id < num_processes:
            raise ValueError(f"process_id {process_id} is not in [0, num_processes="
                             f"{num_processes})")
        return ClusterSpec("explicit", coordinator, int(num_processes), int(process_id))
    if coordinator is not None or num_processes is not None or process_id is not None:
        raise ValueError(f"cluster={cluster!r} takes no coordinator/num_processes/process_id "
                         "(they come from the environment)")
    return ClusterSpec(cluster)


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_count: int | None = None, *,
               cluster: str = "auto") -> ClusterSpec:
    """Joins this process to the others; call before anything touches a JAX device.

    coordinator "HOST:PORT" (process 0's address), num_processes and process_id: explicit
      start (GPU clusters, tests); left out, SLURM jobs and TPU pods are detected.
    local_device_count: with JAX_PLATFORMS=cpu, the number of simulated CPU devices of
      this process; otherwise, use this process's first N local accelerators.
    CPU processes talk over "gloo" collectives (set here; harmless on accelerators).
    Returns the ClusterSpec used.
    """
    spec = resolve_cluster(coordinator, num_processes, process_id, cluster=cluster)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    platforms = (jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS", "")).lower()
    cpu_only = platforms.split(",")[0] == "cpu"
    local_ids = None
    if local_device_count is not None:
        if local_device_count < 1:
            raise ValueError(f"local_device_count must be >= 1, got {local_device_count}")
        if cpu_only:
            jax.config.update("jax_num_cpu_devices", int(local_device_count))
        else:
            local_ids = list(range(int(local_device_count)))
    if spec.kind == "single":
        return spec
    if spec.kind == "explicit":
        jax.distributed.initialize(spec.coordinator, spec.num_processes, spec.process_id,
                                   local_device_ids=local_ids)
    else:  # slurm / tpu: JAX reads the cluster's environment itself
        jax.distributed.initialize(local_device_ids=local_ids)
    return spec


def is_main_process() -> bool:
    return jax.process_index() == 0


def local_batch_slice(sharding: Sharding, global_shape: tuple[int, ...], axis: int = 0) -> slice:
    """The contiguous range of `axis` (the batch) whose data this process's devices hold
    under `sharding`; load exactly those rows. Raises if they are not contiguous."""
    dims = global_shape[axis]
    covered = np.zeros(dims, bool)
    for index in sharding.addressable_devices_indices_map(tuple(global_shape)).values():
        covered[index[axis] if index else slice(None)] = True
    rows = np.flatnonzero(covered)
    if len(rows) == 0 or rows[-1] - rows[0] + 1 != len(rows):
        raise ValueError(f"process {jax.process_index()} holds non-contiguous rows {rows.tolist()}"
                         f" of axis {axis}; order the mesh devices by process")
    return slice(int(rows[0]), int(rows[-1]) + 1)


def global_batch(local: Any, shardings: Any, global_shapes: Any) -> Any:
    """Global jax.Arrays from this process's rows (a pytree of numpy arrays).

    local: rows `local_batch_slice(...)` of every array; shardings / global_shapes: trees
    of the same structure (shapes as tuples). Every process calls it with its own rows.
    """
    return jax.tree.map(
        lambda x, s, shape: jax.make_array_from_process_local_data(s, np.asarray(x), shape),
        local, shardings, global_shapes)


def broadcast_from_main(value: Any) -> Any:
    """Process 0's `value` (a pytree of arrays / numbers) on every process, as numpy.

    Use for host-side decisions that must agree (stop, skip, which samples to replay):
    a decision taken from process-local state would make processes diverge and hang.
    """
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, value)
    return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(value))


def assert_same_on_all_processes(value: Any, what: str) -> None:
    """Raises on every process when `value` differs between processes."""
    if jax.process_count() > 1:
        multihost_utils.assert_equal(value, f"{what} differs between processes")


def process_allgather(tree: Any) -> Any:
    """Full numpy copies of (possibly sharded, multi-process) arrays on every process.

    Arrays sharded over one mesh are gathered by a single compiled program (replicate the
    whole tree), not one program per leaf."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    shardings = [x.sharding for x in jax.tree.leaves(tree)]
    meshes = {s.mesh for s in shardings if isinstance(s, NamedSharding)}
    if len(meshes) != 1 or len(meshes) == 1 and len(shardings) != sum(
            isinstance(s, NamedSharding) for s in shardings):
        return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
    replicated = jax.jit(lambda t: t, out_shardings=NamedSharding(meshes.pop(), P()))(tree)
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), replicated)
