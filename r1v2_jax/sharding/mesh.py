"""Device meshes from config: axes (data, fsdp, tensor), -1 = "the rest", optional DCN
(multi-slice) sizes for TPU pods built of several slices."""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh

AXES = ("data", "fsdp", "tensor")


def resolve_axis_sizes(sizes: Mapping[str, int], num_devices: int, what: str = "mesh") -> tuple[int, ...]:
    """Fills in the single -1 axis so the product equals `num_devices`."""
    unknown = sorted(set(sizes) - set(AXES))
    if unknown:
        raise ValueError(f"{what}: unknown axis name(s) {unknown}; axes are {AXES}")
    values = [int(sizes.get(a, 1)) for a in AXES]
    if values.count(-1) > 1:
        raise ValueError(f"{what}: at most one axis may be -1, got {dict(zip(AXES, values))}")
    known = int(np.prod([v for v in values if v != -1]))
    if -1 in values:
        if num_devices % known:
            raise ValueError(f"{what}: {num_devices} devices are not divisible by {known}")
        values[values.index(-1)] = num_devices // known
    if int(np.prod(values)) != num_devices:
        raise ValueError(f"{what}: axis sizes {dict(zip(AXES, values))} multiply to "
                         f"{int(np.prod(values))}, but there are {num_devices} devices")
    return tuple(values)


def make_mesh(ici: Mapping[str, int], dcn: Mapping[str, int] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A Mesh with axes (data, fsdp, tensor).

    `ici` sizes are within a slice (or the whole machine set when `dcn` is None); `dcn`
    sizes are across slices (multi-slice TPU) and multiply the ICI sizes axis by axis.
    """
    devices = list(jax.devices() if devices is None else devices)
    if dcn:
        num_slices = int(np.prod([int(v) for v in dcn.values()]))
        dcn_shape = resolve_axis_sizes(dcn, num_slices, "mesh.dcn")
        ici_shape = resolve_axis_sizes(ici, len(devices) // num_slices, "mesh.ici")
        grid = mesh_utils.create_hybrid_device_mesh(ici_shape, dcn_shape, devices)
    else:
        shape = resolve_axis_sizes(ici, len(devices), "mesh.ici")
        try:
            grid = mesh_utils.create_device_mesh(shape, devices)
        except (ValueError, NotImplementedError, AssertionError):
            # Simulated / odd device sets have no physical topology to optimise for.
            grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, AXES)


def mesh_from_config(cfg) -> Mesh:
    """cfg: ConfigDict with `ici` (and optional `dcn`) axis-size mappings."""
    dcn = dict(cfg.dcn) if "dcn" in cfg and cfg.dcn else None
    return make_mesh(dict(cfg.ici), dcn)


def parse_axis_sizes(text: str) -> dict[str, int]:
    """'data=1,fsdp=8,tensor=8' -> {'data': 1, 'fsdp': 8, 'tensor': 8} (-1 allowed once)."""
    sizes: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in AXES or name in sizes:
            raise ValueError(f"mesh {text!r}: expected comma-separated AXIS=SIZE with each axis "
                             f"of {AXES} at most once, got {item!r}")
        try:
            sizes[name] = int(value)
        except ValueError:
            raise ValueError(f"mesh {text!r}: size of {name!r} must be an integer, got "
                             f"{value!r}") from None
        if sizes[name] < 1 and sizes[name] != -1:
            raise ValueError(f"mesh {text!r}: size of {name!r} must be >= 1 or -1")
    if not sizes:
        raise ValueError(f"mesh {text!r}: no axis sizes given")
    return sizes
