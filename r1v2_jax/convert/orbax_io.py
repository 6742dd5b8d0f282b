"""The JAX checkpoint folder: `params/` (an orbax PyTree checkpoint) + `model_config.json`.

`save_jax_checkpoint` / `load_jax_checkpoint` go through orbax; restoring can place every
array straight into given shardings so that no host ever holds the whole model.
`open_leaf_stores` opens the stored arrays through TensorStore with orbax's own specs,
so converters can read one layer slice at a time.

Paths go through `etils.epath` (local, `gs://`, ...). orbax and TensorStore refuse relative
local paths, so `as_abs_path` makes them absolute against the current directory first.
"""

from __future__ import annotations

import gc
import json
import os
import time
import traceback
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from etils import epath

from r1v2_jax.convert.errors import ConversionError
from r1v2_jax.convert.hf_load import resolve_dtype
from r1v2_jax.convert.mapping import LeafPath, flatten, leaf_shapes, unflatten
from r1v2_jax.models.config import VLMConfig

PARAMS_DIR = "params"
CONFIG_FILE = "model_config.json"


def as_abs_path(path: str | os.PathLike) -> epath.Path:
    """An epath.Path; a relative local path is made absolute (orbax refuses relative ones)."""
    path = epath.Path(path)
    return path if path.is_absolute() else epath.Path(os.path.abspath(os.fspath(path)))


# counts and dimensions: 0 or less would divide by zero or loop later, far from the file
_SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
          "image_size", "patch_size", "num_channels", "vocab_size", "num_key_value_heads",
          "head_dim", "max_position_embeddings")


def _check_sizes(config: VLMConfig, file) -> VLMConfig:
    for part in ("vision", "text"):
        sub = getattr(config, part)
        for name in _SIZES:
            value = getattr(sub, name, 1)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConversionError(f"{file}: field '{part}.{name}' is {value!r}; expected a "
                                      "positive integer")
    return config


def read_jax_config(path: str | os.PathLike) -> VLMConfig:
    file = as_abs_path(path) / CONFIG_FILE
    try:
        config = VLMConfig.from_dict(json.loads(file.read_text()))
    except FileNotFoundError:
        raise ConversionError(f"{file}: not found (not a JAX checkpoint folder)") from None
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise ConversionError(f"{file}: invalid model config ({err})") from None
    return _check_sizes(config, file)


def write_jax_config(config: VLMConfig, path: str | os.PathLike) -> None:
    path = as_abs_path(path)
    tmp = path / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(config.to_dict(), indent=2))
    tmp.replace(path / CONFIG_FILE)


def check_params(config: VLMConfig, shapes: dict[LeafPath, tuple], where: str) -> None:
    """Leaves and shapes must be exactly those of docs/PARAMS.md for `config`."""
    expected = leaf_shapes(config)
    problems = [f"{where}: missing parameter {'/'.join(k)} {list(expected[k])}"
                for k in sorted(set(expected) - set(shapes))]
    problems += [f"{where}: unexpected parameter {'/'.join(k)}"
                 for k in sorted(set(shapes) - set(expected))]
    problems += [f"{where}: parameter {'/'.join(k)} has shape {list(shapes[k])}; the config "
                 f"implies {list(expected[k])}"
                 for k in sorted(set(expected) & set(shapes)) if tuple(shapes[k]) != expected[k]]
    if problems:
        raise ConversionError(problems)


def remove_orbax_tmp(target: epath.Path, *, settle_s: float = 0.2, max_s: float = 30.0) -> None:
    """Deletes what a failed orbax save of `target` left (`<name>.orbax-checkpoint-tmp*`).

    The failure surfaces from the first write that fails while TensorStore may still be
    finishing other writes, and objects kept alive by the traceback flush their pending
    writes (the OCDBT manifest) when collected: either re-creates the folder after it was
    removed, or lands in a folder while it is being removed. So collect, remove, and repeat
    until it stays gone for `settle_s`.
    """
    pattern = f"{target.name}.orbax-checkpoint-tmp*"
    deadline = time.monotonic() + max_s
    while True:
        gc.collect()
        for tmp in target.parent.glob(pattern):
            try:
                tmp.rmtree(missing_ok=True)
            except OSError:  # a late write landed in a folder being removed: next round
                pass
        time.sleep(settle_s)
        if not any(target.parent.glob(pattern)) or time.monotonic() > deadline:
            return


def save_pytree(tree: dict, target: epath.Path) -> None:
    """orbax PyTree save of `tree` into the new folder `target`; nothing is left on failure."""
    try:
        with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as ckptr:
            ckptr.save(target, args=ocp.args.PyTreeSave(tree))
        return
    except BaseException as err:
        error = err
    traceback.clear_frames(error.__traceback__)  # frees the TensorStore objects it holds
    remove_orbax_tmp(target)
    raise error


def save_jax_checkpoint(config: VLMConfig, params: dict, path: str | os.PathLike) -> None:
    """Saves `params` (numpy or jax arrays, possibly sharded) with orbax, plus the config.

    orbax writes `params/` atomically (temporary folder + rename, on every host); the
    config file is written afterwards by the primary process. A failed save leaves no
    temporary folder (and no `path` when this call created it).
    """
    path = as_abs_path(path)
    check_params(config, {k: tuple(v.shape) for k, v in flatten(params).items()}, "params")
    if (path / PARAMS_DIR).exists():
        raise ConversionError(f"{path / PARAMS_DIR}: already exists; refusing to overwrite")
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        save_pytree(params, path / PARAMS_DIR)
        if jax.process_index() == 0:
            write_jax_config(config, path)
    except BaseException:
        if created and jax.process_index() == 0 and not any(path.iterdir()):
            path.rmdir()
        raise


def _stored_leaves(path: epath.Path) -> dict[LeafPath, Any]:
    params_dir = path / PARAMS_DIR
    if not params_dir.is_dir():
        raise ConversionError(f"{params_dir}: not found (not a JAX checkpoint folder)")
    meta = ocp.PyTreeCheckpointHandler().metadata(params_dir)
    return flatten(meta.tree)


def load_jax_checkpoint(path: str | os.PathLike, *, shardings=None,
                        dtype=None) -> tuple[VLMConfig, dict]:
    """(config, params) from a folder written by `save_jax_checkpoint` / `convert_to_jax`.

    shardings: None -> numpy arrays on this host; else a pytree of `jax.sharding.Sharding`
      with the params' structure, and every array is restored straight into its sharding
      (each process reads only its own shards).
    dtype: None keeps the stored dtype, else e.g. "bfloat16" (cast while reading).
    """
    path = as_abs_path(path)
    config = read_jax_config(path)
    stored = _stored_leaves(path)
    check_params(config, {k: tuple(m.shape) for k, m in stored.items()}, str(path / PARAMS_DIR))
    cast = None if dtype is None else resolve_dtype(dtype)
    if shardings is None:
        args = {k: ocp.RestoreArgs(restore_type=np.ndarray, dtype=cast) for k in stored}
    else:
        flat_shardings = flatten(shardings) if isinstance(shardings, dict) else None
        if flat_shardings is None or set(flat_shardings) != set(stored):
            raise ConversionError(
                "shardings must be a nested dict with exactly the params' leaves; differing: "
                f"{sorted('/'.join(k) for k in set(flat_shardings or {}) ^ set(stored))[:10]}")
        args = {k: ocp.ArrayRestoreArgs(sharding=flat_shardings[k], global_shape=tuple(m.shape),
                                        dtype=cast) for k, m in stored.items()}
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as ckptr:
        params = ckptr.restore(path / PARAMS_DIR, args=ocp.args.PyTreeRestore(
            restore_args=unflatten(args)))
    if cast is not None:
        config = config.replace(param_dtype=cast.name)
    return config, params


def open_leaf_stores(path: str | os.PathLike) -> tuple[VLMConfig,
                                                     dict[LeafPath, ts.TensorStore]]:
    """Config and one read-only TensorStore per parameter of a JAX checkpoint folder."""
    path = as_abs_path(path)
    config = read_jax_config(path)
    stored = _stored_leaves(path)
    check_params(config, {k: tuple(m.shape) for k, m in stored.items()}, str(path / PARAMS_DIR))
    params_dir = path / PARAMS_DIR
    use_ocdbt = ocp.type_handlers.is_ocdbt_checkpoint(params_dir)
    meta = ocp.PyTreeCheckpointHandler().metadata(params_dir)
    context = ocp.type_handlers.get_ts_context(use_ocdbt=use_ocdbt)
    stores = {}
    for leaf, m in stored.items():
        info = ocp.type_handlers.ParamInfo(name=m.name, parent_dir=params_dir,
                                           use_zarr3=bool(meta.use_zarr3), ts_context=context)
        spec = ocp.type_handlers.get_json_tspec_read(info, use_ocdbt=use_ocdbt)
        stores[leaf] = ts.open(spec, read=True, context=context).result()
    return config, stores
