"""Record sources: random access to raw rows (dicts in the record schema of records.py).

A row's `images` is a list of image references: a path (JSONL: relative to the file's
folder) or the encoded bytes (parquet / TFDS). Every source reads lazily: JSONL keeps one
byte offset per line, parquet one decoded row group per thread, TFDS its own index; so
host memory does not grow with the data set.

    JSONL    one JSON object per line (records.py's format); rows named `file:line`
    parquet  one column per record field; `images` a list of binary, or of HF `Image`
             structs {bytes, path}; `meta` a JSON string; null = field absent.
             Rows named `file:row N`. Write small row groups (`r1v2 data convert` does):
             a random read decodes the whole row group it falls in.
    TFDS     `tfds:NAME/SPLIT` under a data_dir, array_record (`tfds.data_source`); same
             fields as parquet, text as bytes, "" = field absent.
"""

from __future__ import annotations

import bisect
import json
import os
import threading
from typing import Any

import numpy as np
from etils import epath

from r1v2_jax.data.records import RecordError


class JsonlSource:
    def __init__(self, path: str):
        self.path = str(path)
        p = epath.Path(self.path)
        if not p.exists():
            raise FileNotFoundError(f"records file not found: {self.path}")
        self.base = (str(p.parent) if "://" in self.path
                     else os.path.dirname(os.path.abspath(self.path)))
        offsets, lines = [], []
        with p.open("rb") as f:  # one pass over the bytes: offsets of the non-blank lines
            pos = 0
            for lineno, raw in enumerate(f, 1):
                if raw.strip():
                    offsets.append(pos)
                    lines.append(lineno)
                pos += len(raw)
        self._offsets = np.asarray(offsets, np.int64)
        self._lines = np.asarray(lines, np.int64)
        self._local = threading.local()

    def __len__(self) -> int:
        return len(self._offsets)

    def name(self, i: int) -> str:
        return f"{self.path}:{int(self._lines[i])}"

    def _file(self):
        f = getattr(self._local, "f", None)
        if f is None:  # one handle per worker thread: seek + read are not thread safe
            f = self._local.f = epath.Path(self.path).open("rb")
        return f

    def __getitem__(self, i: int) -> dict:
        f = self._file()
        f.seek(int(self._offsets[i]))
        raw, source = f.readline(), self.name(i)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:  # records.py's messages
            raise RecordError(source, "<line>", "bad_encoding",
                              f"not UTF-8 (byte {err.start}: {raw[err.start:err.start + 1]!r})")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise RecordError(source, "<line>", "bad_json", f"invalid JSON: {err}")
        if not isinstance(obj, dict):
            raise RecordError(source, "<line>", "bad_json", "expected a JSON object")
        if isinstance(obj.get("images"), list):  # relative to the file's folder
            obj["images"] = [_image_ref(v, self.base) if isinstance(v, str) else v
                             for v in obj["images"]]
        return obj


def _image_ref(value: Any, base: str):
    """bytes, a path, or an HF `Image` struct {bytes, path} -> bytes or path."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        value = value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str) and value and not os.path.isabs(value) and "://" not in value:
        return f"{base}/{value}"
    return value  # validation names anything else


def _clean(row: dict, base: str, source: str) -> dict:
    """A columnar row -> the record schema: absent (null / "") optional fields dropped,
    images as references, meta parsed from its JSON string."""
    out = {}
    for key, value in row.items():
        if isinstance(value, bytes) and key != "images":
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as err:
                raise RecordError(source, key, "bad_encoding", f"not UTF-8 (byte {err.start})")
        if isinstance(value, np.generic):
            value = value.item()
        if value is None or (isinstance(value, str) and value == "" and key in ("id", "meta")):
            continue
        if isinstance(value, float) and key.endswith("_score") and np.isnan(value):
            continue
        out[key] = value
    if "images" in out:
        images = out["images"]
        if isinstance(images, np.ndarray):
            images = list(images)
        out["images"] = [_image_ref(v, base) for v in images] \
            if isinstance(images, list) else images
    if isinstance(out.get("meta"), str):
        try:
            out["meta"] = json.loads(out["meta"])
        except json.JSONDecodeError as err:
            raise RecordError(source, "meta", "bad_json", f"not a JSON string: {err}")
    return out


class ParquetSource:
    def __init__(self, path: str):
        import pyarrow.parquet as pq

        self.path = str(path)
        p = epath.Path(self.path)
        if not p.exists():
            raise FileNotFoundError(f"records file not found: {self.path}")
        self.base = (str(p.parent) if "://" in self.path
                     else os.path.dirname(os.path.abspath(self.path)))
        self._file = pq.ParquetFile(self.path if "://" not in self.path else p.open("rb"))
        meta = self._file.metadata
        self._starts = np.cumsum([0] + [meta.row_group(g).num_rows
                                        for g in range(meta.num_row_groups)]).tolist()
        self._lock = threading.Lock()  # the ParquetFile handle is shared by the threads
        self._local = threading.local()

    def __len__(self) -> int:
        return self._starts[-1]

    def name(self, i: int) -> str:
        return f"{self.path}:row {i}"

    def __getitem__(self, i: int) -> dict:
        g = bisect.bisect_right(self._starts, i) - 1
        cached = getattr(self._local, "group", None)
        if cached is None or cached[0] != g:  # one decoded row group per thread
            with self._lock:
                table = self._file.read_row_group(g)
            cached = self._local.group = (g, table.to_pylist())
        return _clean(cached[1][i - self._starts[g]], self.base, self.name(i))


class TfdsSource:
    def __init__(self, spec: str, data_dir: str | None):
        import tensorflow_datasets as tfds

        name_split = spec.removeprefix("tfds:")
        name, _, split = name_split.partition("/")
        self.path, self.base = spec, data_dir or "."
        self._source = tfds.data_source(name, split=split or "train", data_dir=data_dir)

    def __len__(self) -> int:
        return len(self._source)

    def name(self, i: int) -> str:
        return f"{self.path}:row {i}"

    def __getitem__(self, i: int) -> dict:
        return _clean(dict(self._source[i]), self.base, self.name(i))


def open_source(path: str, *, tfds_data_dir: str | None = None):
    """By name: `tfds:NAME/SPLIT`, `*.parquet`, else JSONL."""
    path = os.fspath(path)
    if path.startswith("tfds:"):
        return TfdsSource(path, tfds_data_dir)
    if path.endswith(".parquet"):
        return ParquetSource(path)
    return JsonlSource(path)
