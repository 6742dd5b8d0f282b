"""Streaming HF -> JAX conversion: one tensor in memory at a time.

The output is an orbax PyTree checkpoint in orbax's plain (non-OCDBT) zarr v2 format:
one zarr array per parameter, opened with the very TensorStore spec orbax writes
(`orbax.checkpoint.type_handlers.get_json_tspec_write`), plus the `_METADATA` tree file
orbax reads. The only difference from `PyTreeCheckpointHandler(use_ocdbt=False).save`
is the chunk grid: layer-stacked arrays get one chunk (or a few) per layer, so each
layer slice is written — and later restored into a sharding — independently.
tests/convert/test_streaming.py checks the files against what orbax itself writes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from etils import epath

from r1v2_jax.convert.errors import ConversionError
from r1v2_jax.errors import output_error, uninterrupted
from r1v2_jax.convert.hf_load import open_hf_checkpoint
from r1v2_jax.convert.mapping import LeafPath, leaf_shapes
from r1v2_jax.convert.orbax_io import PARAMS_DIR, write_jax_config
from r1v2_jax.convert.tokenizer_files import copy_tokenizer_files

DEFAULT_MAX_CHUNK_BYTES = 1 << 30


def chunk_shape(shape: tuple[int, ...], itemsize: int, stacked: bool,
                max_chunk_bytes: int) -> tuple[int, ...]:
    """One layer per chunk when stacked; rows of the next axis split until under the cap."""
    lead = 1 if stacked else 0  # axes fixed to 1 in front of the splittable axis
    chunk = [1] * lead + list(shape[lead:])
    if len(chunk) > lead:
        row_bytes = itemsize * math.prod(chunk[lead + 1:])
        rows = max(1, min(chunk[lead], max_chunk_bytes // max(row_bytes, 1)))
        chunk[lead] = math.ceil(chunk[lead] / math.ceil(chunk[lead] / rows))
    return tuple(chunk)


def orbax_tree_metadata(leaves: dict[LeafPath, tuple[int, ...]]) -> dict:
    """The `_METADATA` document orbax writes for a dict tree of jax.Arrays (non-OCDBT, zarr2)."""
    tree = {str(leaf): {"key_metadata": [{"key": k, "key_type": 2} for k in leaf],
                        "value_metadata": {"value_type": "jax.Array", "skip_deserialize": False,
                                           "write_shape": list(shape)}}
            for leaf, shape in leaves.items()}
    return {"tree_metadata": tree, "use_ocdbt": False, "use_zarr3": False,
            "store_array_data_equal_to_fill_value": True, "custom_metadata": None}


def open_leaf_writers(params_dir: Path, shapes: dict[LeafPath, tuple[int, ...]],
                      dtypes: dict[LeafPath, np.dtype], stacked: set[LeafPath],
                      max_chunk_bytes: int) -> dict[LeafPath, ts.TensorStore]:
    # No chunk cache: a written chunk goes straight to disk and leaves memory.
    context = ts.Context({"cache_pool": {"total_bytes_limit": 0}})
    stores = {}
    for leaf, shape in shapes.items():
        info = ocp.type_handlers.ParamInfo(name=".".join(leaf), parent_dir=epath.Path(params_dir),
                                           use_zarr3=False, use_compression=True,
                                           ts_context=context)
        spec = ocp.type_handlers.get_json_tspec_write(
            info, use_ocdbt=False, global_shape=shape, local_shape=shape, dtype=dtypes[leaf])
        spec["metadata"]["chunks"] = list(chunk_shape(shape, dtypes[leaf].itemsize,
                                                      leaf in stacked, max_chunk_bytes))
        with uninterrupted():  # a signal waits for the open: no write after the cleanup
            stores[leaf] = ts.open(spec, create=True, context=context).result()
    return stores


def convert_to_jax(src: str | Path, dst: str | Path, *, dtype="bfloat16",
                   max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES) -> Path:
    """HF checkpoint folder `src` (either layout) -> JAX checkpoint folder `dst`.

    Everything is validated before `dst` is touched; the output is assembled in a hidden
    sibling folder and renamed to `dst` only when complete. dtype=None keeps the stored
    dtypes. The tokenizer files of `src` (and so its chat template) are copied along.
    Peak memory is a small multiple of the largest single tensor.
    """
    dst = Path(dst)
    if dst.exists():
        raise ConversionError(f"{dst}: already exists; refusing to overwrite")
    ckpt = open_hf_checkpoint(src, dtype=dtype)
    if not dst.parent.is_dir():
        raise ConversionError(f"{dst.parent}: parent folder does not exist")
    shapes = leaf_shapes(ckpt.config)
    stacked = {leaf for rule in ckpt.rules if rule.stacked for leaf in rule.leaves}
    tmp = dst.parent / f".{dst.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        params_dir = tmp / PARAMS_DIR
        params_dir.mkdir(parents=True)
        stores = open_leaf_writers(params_dir, shapes, ckpt.leaf_dtypes, stacked, max_chunk_bytes)
        for rule, layer, pieces in ckpt.pieces():
            for leaf, piece in zip(rule.leaves, pieces):
                target = stores[leaf] if layer is None else stores[leaf][layer]
                with uninterrupted():
                    target.write(piece, can_reference_source_data_indefinitely=True).result()
            del pieces
        (params_dir / "_METADATA").write_text(json.dumps(orbax_tree_metadata(shapes)))
        write_jax_config(ckpt.config, tmp)
        copy_tokenizer_files(src, tmp, required=False)  # generate/train read it from here
        os.rename(tmp, dst)
    except BaseException as err:  # exceptions, Ctrl-C, SIGTERM (r1v2_jax.errors.signals_raise)
        shutil.rmtree(tmp, ignore_errors=True)
        user_error = output_error(err, dst)  # disk full, read-only destination
        if user_error is not None:
            raise user_error from err
        raise
    return dst
