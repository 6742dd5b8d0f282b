"""Reward-model checkpoints: the VLM tensors as usual plus the scalar value head.

JAX folder (orbax):  params/ + model_config.json exactly as `save_jax_checkpoint` writes
  them (so every VLM tool reads the backbone), and value_head/, an orbax PyTree checkpoint
  of {"kernel": [E, 1], "bias": [1]}.
HF folder: the VLM checkpoint exactly as `save_hf` writes it (either layout) plus
  `value_head.safetensors` holding
      value_head.weight [1, E]   (torch Linear(E, 1) layout: the JAX kernel transposed)
      value_head.bias   [1]
  The file is deliberately NOT listed in model.safetensors.index.json: LM loaders
  (ours, transformers) then read the folder as a plain VLM; `load_reward_model_hf` reads
  the head from this file. score = value_head(h_last) on the final-norm hidden state of
  the last real token.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from safetensors.numpy import save_file

from r1v2_jax.convert.errors import ConversionError
from r1v2_jax.convert.hf_load import load_hf, resolve_dtype
from r1v2_jax.convert.hf_save import DEFAULT_SHARD_SIZE, convert_to_hf, save_hf
from r1v2_jax.convert.orbax_io import (CONFIG_FILE, PARAMS_DIR, as_abs_path, load_jax_checkpoint,
                                       read_jax_config, save_jax_checkpoint, save_pytree)
from r1v2_jax.convert.safetensors_files import FLOAT_DTYPES, read_header, read_tensor
from r1v2_jax.models.config import VLMConfig
from r1v2_jax.models.reward_model import VALUE_HEAD, split_value_head

VALUE_HEAD_FILE = "value_head.safetensors"
VALUE_HEAD_DIR = "value_head"
WEIGHT, BIAS = "value_head.weight", "value_head.bias"


def _check_head(config: VLMConfig, head: dict, where: str) -> None:
    e = config.text.hidden_size
    want = {"kernel": (e, 1), "bias": (1,)}
    if set(head) != set(want):
        raise ConversionError(f"{where}: value head must have exactly {sorted(want)}, "
                              f"got {sorted(head)}")
    for k, shape in want.items():
        if tuple(head[k].shape) != shape:
            raise ConversionError(f"{where}: value_head/{k} has shape {list(head[k].shape)}; "
                                  f"hidden_size {e} implies {list(shape)}")


def head_to_hf(head: dict) -> dict[str, np.ndarray]:
    """JAX {kernel [E,1], bias [1]} -> {value_head.weight [1,E], value_head.bias [1]}."""
    return {WEIGHT: np.ascontiguousarray(np.asarray(head["kernel"]).T),
            BIAS: np.ascontiguousarray(np.asarray(head["bias"]))}


def head_from_hf(tensors: dict[str, np.ndarray]) -> dict:
    return {"kernel": np.ascontiguousarray(tensors[WEIGHT].T), "bias": tensors[BIAS]}


# ----------------------------------------------------------------------------- JAX
def save_reward_model(config: VLMConfig, rm_params: dict, path: str | os.PathLike) -> None:
    """VLM part via `save_jax_checkpoint`, the head as path/value_head (orbax).

    A failed save removes what it wrote: no backbone is left without its head.
    """
    path = as_abs_path(path)
    lm, head = split_value_head(rm_params)
    _check_head(config, head, "rm_params")
    if (path / VALUE_HEAD_DIR).exists():
        raise ConversionError(f"{path / VALUE_HEAD_DIR}: already exists; refusing to overwrite")
    created = not path.exists()
    save_jax_checkpoint(config, lm, path)
    try:
        save_pytree(head, path / VALUE_HEAD_DIR)
    except BaseException:
        if jax.process_index() == 0:
            (path / PARAMS_DIR).rmtree(missing_ok=True)
            (path / CONFIG_FILE).unlink(missing_ok=True)
            if created and not any(path.iterdir()):
                path.rmdir()
        raise


def _restore_head(head_dir, dtype=None) -> dict:
    cast = None if dtype is None else resolve_dtype(dtype)
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as ckptr:
        return ckptr.restore(head_dir, args=ocp.args.PyTreeRestore(restore_args={
            k: ocp.RestoreArgs(restore_type=np.ndarray, dtype=cast) for k in ("kernel", "bias")}))


def load_reward_model(path: str | os.PathLike, *, dtype=None,
                      shardings=None) -> tuple[VLMConfig, dict]:
    """(config, rm params): the inverse of `save_reward_model`. shardings: None -> numpy
    on this host; else the VLM part's shardings (`load_jax_checkpoint`): every array is
    restored straight onto its shard (the small head stays a host array)."""
    head_dir = as_abs_path(path) / VALUE_HEAD_DIR
    if not head_dir.is_dir():
        raise ConversionError(f"{head_dir}: not found (a VLM checkpoint without a value head?)")
    config, lm = load_jax_checkpoint(path, dtype=dtype, shardings=shardings)
    head = _restore_head(head_dir, dtype)
    _check_head(config, head, str(head_dir))
    return config, {**lm, VALUE_HEAD: head}


# ----------------------------------------------------------------------------- HF
def _write_head_file(head: dict, folder: Path, dtype) -> None:
    tensors = head_to_hf(head)
    if dtype is not None:
        cast = resolve_dtype(dtype)
        tensors = {k: v.astype(cast) for k, v in tensors.items()}
    save_file(tensors, folder / VALUE_HEAD_FILE, metadata={"format": "pt"})


def save_reward_model_hf(config: VLMConfig, rm_params: dict, path: str | Path, layout: str = "hf",
                         *, dtype=None, shard_size: int | str = DEFAULT_SHARD_SIZE) -> Path:
    """`save_hf` of the VLM part, then value_head.safetensors next to its shards."""
    lm, head = split_value_head(rm_params)
    _check_head(config, head, "rm_params")
    out = save_hf(config, lm, path, layout, dtype=dtype, shard_size=shard_size)
    _write_head_file(jax.device_get(head), out, dtype)
    return out


def convert_reward_model_to_hf(src: str | Path, dst: str | Path, layout: str = "hf", *,
                               dtype=None, shard_size: int | str = DEFAULT_SHARD_SIZE) -> Path:
    """JAX reward-model folder -> HF folder, the VLM streamed as by `convert_to_hf`."""
    config = read_jax_config(src)
    head_dir = as_abs_path(src) / VALUE_HEAD_DIR
    if not head_dir.is_dir():
        raise ConversionError(f"{head_dir}: not found (a VLM checkpoint without a value head?)")
    head = _restore_head(head_dir)
    _check_head(config, head, str(head_dir))
    out = convert_to_hf(src, dst, layout, dtype=dtype, shard_size=shard_size)
    _write_head_file(head, out, dtype)
    return out


def load_reward_model_hf(path: str | Path, *, dtype=None) -> tuple[VLMConfig, dict]:
    """(config, rm params as numpy) from a folder written by `save_reward_model_hf`."""
    path = Path(path)
    file = path / VALUE_HEAD_FILE
    if not file.is_file():
        raise ConversionError(f"{file}: not found (a VLM checkpoint without a value head?)")
    infos, problems = read_header(file)
    if problems:
        raise ConversionError(problems)
    if set(infos) != {WEIGHT, BIAS}:
        raise ConversionError(f"{file}: expected exactly tensors {[WEIGHT, BIAS]}, "
                              f"got {sorted(infos)}")
    bad = [f"{i.where()} has dtype {i.dtype}; expected a floating dtype" for i in infos.values()
           if i.dtype not in FLOAT_DTYPES]
    if bad:
        raise ConversionError(bad)
    config, lm = load_hf(path, dtype=dtype)
    cast = None if dtype is None else resolve_dtype(dtype)
    tensors = {k: read_tensor(info) for k, info in infos.items()}
    if cast is not None:
        tensors = {k: v.astype(cast) for k, v in tensors.items()}
    e = config.text.hidden_size
    for key, shape in ((WEIGHT, (1, e)), (BIAS, (1,))):
        if tensors[key].shape != shape:
            raise ConversionError(f"{infos[key].where()} has shape {list(tensors[key].shape)}; "
                                  f"hidden_size {e} implies {list(shape)}")
    return config, {**lm, VALUE_HEAD: head_from_hf(tensors)}
