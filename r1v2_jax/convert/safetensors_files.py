"""Finding, checking and reading the safetensors files of a checkpoint folder.

The format is an 8-byte little-endian header length, a JSON header of
{name: {dtype, shape, data_offsets}}, then raw little-endian C-order data. The headers are
read directly so that every tensor can be checked against the file size and the others
(no overlaps or holes, as the library requires) before anything is converted (a truncated
file names the tensors it lost), and tensors are read with one
plain read each so memory holds exactly one copy. Writing uses the safetensors library.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

from r1v2_jax.convert.errors import ConversionError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# safetensors dtype name -> numpy dtype; only floating types are valid weights.
FLOAT_DTYPES = {"F16": np.dtype(np.float16), "BF16": np.dtype(ml_dtypes.bfloat16),
                "F32": np.dtype(np.float32), "F64": np.dtype(np.float64)}
_MAX_HEADER = 100 * 2**20  # the safetensors format's own limit


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    key: str  # as spelled in the file
    file: Path
    dtype: str  # safetensors name, e.g. "BF16"
    shape: tuple[int, ...]
    offset: int = 0  # first data byte in the file

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * FLOAT_DTYPES.get(
            self.dtype, np.dtype(np.uint8)).itemsize

    def where(self) -> str:
        return f"tensor {self.key!r} in {self.file.name}"


def read_header(file: Path) -> tuple[dict[str, TensorInfo], list[str]]:
    """Tensor infos of one file and the problems found (truncation, bad header...)."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            return {}, [f"{file}: truncated safetensors file ({size} bytes, no header)"]
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > min(_MAX_HEADER, size - 8):
            return {}, [f"{file}: truncated or corrupt safetensors header (declares "
                        f"{header_len} header bytes, file has {size})"]
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return {}, [f"{file}: unreadable safetensors header ({err})"]
    header.pop("__metadata__", None)
    data_size = size - 8 - header_len
    infos, problems = {}, []
    end_max = 0
    spans: list[tuple[int, int, str]] = []
    for key, entry in header.items():
        try:
            dtype, shape = entry["dtype"], tuple(entry["shape"])
            begin, end = entry["data_offsets"]
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                       for v in (begin, end, *shape)) or begin > end:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            problems.append(f"{file}: malformed header entry for tensor {key!r}")
            continue
        info = TensorInfo(key, file, dtype, shape, 8 + header_len + begin)
        infos[key] = info
        spans.append((begin, end, key))
        end_max = max(end_max, end)
        if end > data_size:
            problems.append(f"{info.where()}: data ends at byte {end} but the file holds "
                            f"{data_size} data bytes (truncated file)")
        elif dtype in FLOAT_DTYPES and end - begin != info.nbytes:
            problems.append(f"{info.where()}: {end - begin} data bytes for shape {list(shape)} "
                            f"{dtype} (expected {info.nbytes})")
    problems += _layout_problems(file, spans)
    if not problems and end_max != data_size:
        problems.append(f"{file}: {data_size - end_max} trailing bytes after the last tensor "
                        "(corrupt file)")
    return infos, problems


def _layout_problems(file: Path, spans: list[tuple[int, int, str]]) -> list[str]:
    """Tensors must tile the data buffer in order, as the safetensors library requires:
    each starts where the previous one ends. An overlap would make one weight a (partial)
    copy of another; a hole is unaccounted data."""
    problems, at, prev = [], 0, None
    for begin, end, key in sorted(spans):
        if begin < at:
            problems.append(f"{file}: tensor {key!r} (bytes {begin}-{end}) overlaps tensor "
                            f"{prev!r} (ends at byte {at}) in the data buffer")
        elif begin > at:
            problems.append(f"{file}: {begin - at} unused bytes before tensor {key!r} "
                            f"(bytes {begin}-{end}) in the data buffer")
        at, prev = max(at, end), key
    return problems


def scan_folder(folder: Path) -> dict[str, TensorInfo]:
    """All tensors of the checkpoint in `folder`, via the index or the single file.

    Raises ConversionError listing every inconsistency between index and files.
    """
    index_path, single = folder / INDEX_FILE, folder / SINGLE_FILE
    problems: list[str] = []
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError("weight_map is not an object")
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ConversionError(f"{index_path}: not a valid safetensors index ({err})") from None
        files = sorted(set(weight_map.values()))
    elif single.is_file():
        weight_map, files = None, [SINGLE_FILE]
    else:
        raise ConversionError(f"{folder}: no {INDEX_FILE} or {SINGLE_FILE}")
    tensors: dict[str, TensorInfo] = {}
    for name in files:
        file = folder / name
        if not file.is_file():
            keys = sorted(k for k, v in weight_map.items() if v == name)
            problems.append(f"{file}: missing file (index lists {len(keys)} tensor(s) in it, "
                            f"e.g. {keys[0]!r})")
            continue
        infos, file_problems = read_header(file)
        problems += file_problems
        for key, info in infos.items():
            if weight_map is not None and weight_map.get(key) != name:
                where = (f"lists it in {weight_map[key]}" if key in weight_map
                         else "does not list it")
                problems.append(f"{info.where()}: {INDEX_FILE} {where}")
                continue
            tensors[key] = info
    if weight_map is not None:
        for key, name in weight_map.items():
            if (folder / name).is_file() and key not in tensors and not any(
                    key in p for p in problems):
                problems.append(f"tensor {key!r}: {INDEX_FILE} lists it in {name}, which does "
                                "not contain it")
    if problems:
        raise ConversionError(problems)
    return tensors


def read_tensor(info: TensorInfo) -> np.ndarray:
    """The tensor's data as a numpy array of its own dtype (little-endian, C order).

    A plain read into a fresh array rather than the library's memory map: mapped pages
    stay resident while the file is open, doubling the memory a large tensor needs.
    """
    dtype = FLOAT_DTYPES[info.dtype].newbyteorder("<")
    count = int(np.prod(info.shape, dtype=np.int64))
    out = np.fromfile(info.file, dtype=dtype, count=count, offset=info.offset)
    if out.size != count:
        raise ConversionError(f"{info.where()}: file ended while reading (truncated?)")
    return out.reshape(info.shape)
