"""JAX parameters -> a Hugging Face checkpoint folder in either layout.

Writes config.json, `model-XXXXX-of-YYYYY.safetensors` shards,
`model.safetensors.index.json` and the tokenizer/processor/generation files of
processor_files.py, into a hidden sibling folder renamed at the end. Tensors
are produced one at a time from a `read_leaf(leaf, layer)` callback, so the source can be
an in-memory tree (`save_hf`) or a JAX checkpoint on disk read slice by slice
(`convert_to_hf`); memory holds one shard plus one tensor.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
from safetensors.numpy import save_file

from r1v2_jax.convert.errors import ConversionError
from r1v2_jax.errors import output_error
from r1v2_jax.convert.hf_config_out import check_writable, hf_config_dict
from r1v2_jax.convert.hf_load import resolve_dtype
from r1v2_jax.convert.mapping import LeafPath, TensorRule, flatten, rules_for
from r1v2_jax.convert.orbax_io import check_params, open_leaf_stores
from r1v2_jax.convert.processor_files import preprocessor_config, write_processor_files
from r1v2_jax.convert.safetensors_files import FLOAT_DTYPES, INDEX_FILE
from r1v2_jax.models.config import VLMConfig

DEFAULT_SHARD_SIZE = "5GB"
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
ReadLeaf = Callable[[LeafPath, "int | None"], np.ndarray]


def parse_size(size: int | str) -> int:
    """5_000_000_000, "5GB" (10^9) or "4GiB" (2^30) -> bytes."""
    if isinstance(size, int) and size > 0:
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(size))
    if not match or match.group(2).upper() not in _UNITS or float(match.group(1)) <= 0:
        raise ConversionError(f"shard size {size!r} is not a positive size like 5GB or 500MiB")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _file_mode() -> int:
    """Permissions an ordinary new file gets under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _plan(rules: list[TensorRule], dtypes: dict[str, np.dtype], shard_bytes: int):
    """Greedy shards of (key, rule, layer) in rule order; a tensor never spans shards."""
    shards, current, size = [], [], 0
    for rule in rules:
        for key, layer in rule.instances():
            nbytes = int(np.prod(rule.hf_shape)) * dtypes[key].itemsize
            if current and size + nbytes > shard_bytes:
                shards.append(current)
                current, size = [], 0
            current.append((key, rule, layer))
            size += nbytes
    if current:
        shards.append(current)
    return shards


def write_hf(config: VLMConfig, read_leaf: ReadLeaf, leaf_dtypes: dict[LeafPath, np.dtype],
             path: str | Path, layout: str, *, dtype=None,
             shard_size: int | str = DEFAULT_SHARD_SIZE, tokenizer_dir=None) -> Path:
    """The shared writer behind `save_hf` and `convert_to_hf`.

    tokenizer_dir: folder whose tokenizer files (and chat template) are copied along.
    """
    path = Path(path)
    if path.exists():
        raise ConversionError(f"{path}: already exists; refusing to overwrite")
    if not path.parent.is_dir():
        raise ConversionError(f"{path.parent}: parent folder does not exist")
    check_writable(config, layout)
    if layout == "hf":
        preprocessor_config(config)  # refuses what transformers' processor cannot express
    shard_bytes = parse_size(shard_size)
    cast = None if dtype is None else resolve_dtype(dtype)
    rules = rules_for(config, layout)
    key_dtypes: dict[str, np.dtype] = {}
    for rule in rules:
        dts = {leaf_dtypes[leaf] for leaf in rule.leaves}
        if cast is None and len(dts) > 1:
            names = ", ".join("/".join(leaf) for leaf in rule.leaves)
            raise ConversionError(f"parameters {names} (fused into {rule.hf_key}) have different "
                                  f"dtypes {sorted(d.name for d in dts)}; pass dtype= to cast")
        out_dtype = cast or next(iter(dts))
        key_dtypes.update({key: out_dtype for key, _ in rule.instances()})
    shards = _plan(rules, key_dtypes, shard_bytes)
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    dtype_names = {d.name for d in key_dtypes.values()}
    config_dtype = dtype_names.pop() if len(dtype_names) == 1 else "float32"
    tmp = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        weight_map, total = {}, 0
        for name, shard in zip(names, shards):
            tensors = {}
            for key, rule, layer in shard:
                pieces = [np.asarray(read_leaf(leaf, layer)) for leaf in rule.leaves]
                tensors[key] = rule.to_hf(pieces).astype(key_dtypes[key], copy=False)
                weight_map[key] = name
                total += tensors[key].nbytes
            save_file(tensors, tmp / name, metadata={"format": "pt"})
            os.chmod(tmp / name, _file_mode())  # the library creates files 0600
            del tensors
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2))
        (tmp / "config.json").write_text(
            json.dumps(hf_config_dict(config, layout, config_dtype), indent=2))
        write_processor_files(config, tokenizer_dir, tmp, layout)
        os.rename(tmp, path)
    except BaseException as err:  # exceptions, Ctrl-C, SIGTERM (r1v2_jax.errors.signals_raise)
        shutil.rmtree(tmp, ignore_errors=True)
        user_error = output_error(err, path)  # disk full, read-only destination
        if user_error is not None:
            raise user_error from err
        raise
    return path


def save_hf(config: VLMConfig, params: dict, path: str | Path, layout: str = "hf", *,
            dtype=None, shard_size: int | str = DEFAULT_SHARD_SIZE, tokenizer_dir=None) -> Path:
    """Writes `params` (the docs/PARAMS.md tree) as a HF checkpoint folder `path`.

    layout "hf": loadable by transformers' InternVLForConditionalGeneration.from_pretrained;
    "original": the InternVL chat remote-code layout (fused qkv, vision_config+llm_config;
    copy the remote-code .py files and tokenizer next to it to load it with
    trust_remote_code). dtype None keeps each parameter's dtype. tokenizer_dir: a folder
    whose tokenizer files are copied along (AutoProcessor needs them).
    """
    flat = flatten(params)
    check_params(config, {k: tuple(v.shape) for k, v in flat.items()}, "params")
    leaf_dtypes = {k: np.dtype(v.dtype) for k, v in flat.items()}
    floats = {d.name for d in FLOAT_DTYPES.values()}
    bad = [k for k, d in leaf_dtypes.items() if d.name not in floats]
    if bad:
        raise ConversionError([f"parameter {'/'.join(k)} has non-float dtype "
                               f"{leaf_dtypes[k].name}" for k in bad])

    def read_leaf(leaf: LeafPath, layer: int | None) -> np.ndarray:
        return flat[leaf] if layer is None else flat[leaf][layer]

    return write_hf(config, read_leaf, leaf_dtypes, path, layout, dtype=dtype,
                    shard_size=shard_size, tokenizer_dir=tokenizer_dir)


def convert_to_hf(src: str | Path, dst: str | Path, layout: str = "hf", *, dtype=None,
                  shard_size: int | str = DEFAULT_SHARD_SIZE) -> Path:
    """JAX checkpoint folder `src` -> HF checkpoint folder `dst`, one layer slice at a time.

    The tokenizer files of `src` (see `convert_to_jax`) are copied along."""
    config, stores = open_leaf_stores(src)
    leaf_dtypes = {k: np.dtype(s.dtype.numpy_dtype) for k, s in stores.items()}

    def read_leaf(leaf: LeafPath, layer: int | None) -> np.ndarray:
        store = stores[leaf] if layer is None else stores[leaf][layer]
        return store.read().result()

    return write_hf(config, read_leaf, leaf_dtypes, dst, layout, dtype=dtype,
                    shard_size=shard_size, tokenizer_dir=src)
