"""Exact plain-data form of host-side NumPy arrays, for JSON checkpoint parts.

One format for everything saved beside the device state (the SSB buffer, data order,
counters): {"__ndarray__": {"dtype", "shape", "data": base64 of the C-order bytes}}. Every
writer uses this module, so a reader can decode any nesting of it.
"""

from __future__ import annotations

import base64
from typing import Any, Mapping

import numpy as np

ARRAY_KEY = "__ndarray__"


def encode_array(a: np.ndarray) -> dict:
    """dtype, shape and base64 of the C-order bytes (exact)."""
    a = np.ascontiguousarray(a)
    if a.dtype.hasobject:
        raise ValueError(f"host state arrays must be numeric, got dtype {a.dtype}")
    return {"dtype": a.dtype.str, "shape": list(a.shape),
            "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(d: Mapping) -> np.ndarray:
    raw = base64.b64decode(d["data"])
    return np.frombuffer(raw, dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()


def is_encoded_array(obj: Any) -> bool:
    return isinstance(obj, Mapping) and isinstance(obj.get(ARRAY_KEY), Mapping)


def encode_tree(obj: Any) -> Any:
    """Arrays anywhere in dicts/lists/tuples -> their encoded form; NumPy scalars -> Python."""
    if isinstance(obj, np.ndarray):
        return {ARRAY_KEY: encode_array(obj)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        return {str(k): encode_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode_tree(v) for v in obj]
    return obj


def decode_tree(obj: Any) -> Any:
    """Inverse of `encode_tree` (tuples come back as lists)."""
    if is_encoded_array(obj):
        return decode_array(obj[ARRAY_KEY])
    if isinstance(obj, Mapping):
        return {k: decode_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_tree(v) for v in obj]
    return obj
