"""Hugging Face-style tables (a local folder of parquet / arrow files, as `datasets`
exports or `save_to_disk` writes them) -> records in the pipeline's format.

`ColumnMap` names the source column of each record field; images may be one image or a
list, each HF `Image` struct {bytes, path}, raw bytes or a path (relative to the source
folder). Without an answer_type column the type is inferred from the gold answer
(`infer_answer_type`). Output: parquet (`*.parquet`: record fields as columns, `images`
list<binary>, `meta` a JSON string, small row groups for random access) or the project's
JSONL (`*.jsonl`, images written beside it under `images/`). Records are not validated
here: `r1v2 data stats` and the pipeline do that, naming the rows.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
from typing import Iterator

from PIL import Image

from r1v2_jax.data.answer_forms import CHOICE_LETTERS

FIELDS = {"prompt": ("question", "answer", "answer_type"),
          "preference": ("prompt", "chosen", "rejected", "chosen_score", "rejected_score"),
          "sft": ("question", "response", "answer", "answer_type")}
_REQUIRED = {"prompt": ("question", "answer"), "preference": ("prompt", "chosen", "rejected"),
             "sft": ("question", "response")}


@dataclasses.dataclass(frozen=True)
class ColumnMap:
    """Record field -> source column; None = the field's own name if the table has it."""

    kind: str = "prompt"
    columns: dict = dataclasses.field(default_factory=dict)  # field -> column
    images: str | None = None  # None: "images", else "image", else no images
    id: str | None = None
    meta: tuple[str, ...] = ()  # extra columns kept in meta


_NUMBER = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?%?$")
_MATH = re.compile(r"[\\^_{}=]|\d\s*/\s*\d|sqrt|\bpi\b|frac|°")


def infer_answer_type(answer: str, letters: str = CHOICE_LETTERS) -> str:
    """number ("12", "-3.5", "1,000", "40%"), choice (one option letter, "(B)", "B."),
    math (LaTeX, fractions, powers, equations, sqrt, pi, degrees), else text."""
    a = answer.strip().strip("$").strip()
    if a and _NUMBER.match(a) and any(ch.isdigit() for ch in a):
        return "number"
    bare = a.strip("().:").strip()
    if len(bare) == 1 and bare.upper() in letters.upper() and bare.isupper():
        return "choice"
    if _MATH.search(a):
        return "math"
    return "text"


def table_files(src: str) -> list[str]:
    if os.path.isfile(src):
        return [src]
    if not os.path.isdir(src):
        raise FileNotFoundError(f"{src}: no such file or folder")
    found = sorted(os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs
                   if f.endswith((".parquet", ".arrow")))
    if not found:
        raise FileNotFoundError(f"{src}: holds no .parquet or .arrow file")
    return found


def iter_rows(src: str, batch_rows: int = 256) -> Iterator[tuple[str, dict]]:
    """(name, row) of every row of every table file, streamed in batches."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in table_files(src):
        if path.endswith(".parquet"):
            batches = pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
        else:  # datasets' save_to_disk writes the IPC stream format; others the file one
            try:
                batches = iter(pa.ipc.open_stream(path))
            except pa.ArrowInvalid:
                batches = iter(pa.ipc.open_file(path).to_batches())
        i = 0
        for batch in batches:
            for row in batch.to_pylist():
                yield f"{path}:row {i}", row
                i += 1


def _image_bytes(value, base: str, where: str) -> bytes:
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str) and value:
        path = value if os.path.isabs(value) else os.path.join(base, value)
        if not os.path.isfile(path):
            raise ValueError(f"{where}: image {value!r} not found ({path})")
        with open(path, "rb") as f:
            return f.read()
    raise ValueError(f"{where}: cannot read an image from {type(value).__name__}")


def map_row(row: dict, cmap: ColumnMap, base: str, where: str) -> dict:
    """One source row -> one record (images as bytes)."""
    out = {}
    for f in FIELDS[cmap.kind]:
        col = cmap.columns.get(f) or f
        if col in row and row[col] is not None:
            out[f] = row[col]
        elif f in cmap.columns:
            raise ValueError(f"{where}: column {col!r} (for {f}) is missing; columns: "
                             f"{sorted(row)}")
    for f in _REQUIRED[cmap.kind]:
        if f not in out:
            raise ValueError(f"{where}: no column for {f!r} (columns: {sorted(row)}); "
                             f"map one with --{f} COLUMN")
    for f in ("answer", "question", "prompt"):
        if f in out and not isinstance(out[f], str):
            out[f] = str(out[f])  # numeric gold answers are common
    if "answer" in out and "answer_type" not in out:
        out["answer_type"] = infer_answer_type(out["answer"])
    col = cmap.images or next((c for c in ("images", "image") if c in row), None)
    if col is not None:
        if col not in row:
            raise ValueError(f"{where}: image column {col!r} is missing; columns: "
                             f"{sorted(row)}")
        value = row[col]
        value = [] if value is None else value if isinstance(value, list) else [value]
        out["images"] = [_image_bytes(v, base, f"{where} {col}") for v in value]
    if cmap.id:
        out["id"] = row[cmap.id]
    if cmap.meta:
        out["meta"] = {c: row[c] for c in cmap.meta}
    return out


def _suffix(data: bytes) -> str:
    try:
        return "." + (Image.open(io.BytesIO(data)).format or "bin").lower()
    except Exception:  # unreadable: kept as is, validation names the row
        return ".bin"


class ParquetWriter:
    def __init__(self, path: str, kind: str, row_group_size: int):
        import pyarrow as pa

        self.path, self.rows, self.size, self.writer = path, [], row_group_size, None
        score = [pa.field(f, pa.float64()) for f in FIELDS[kind] if f.endswith("_score")]
        text = [pa.field(f, pa.string()) for f in FIELDS[kind] if not f.endswith("_score")]
        self.schema = pa.schema([pa.field("images", pa.list_(pa.binary()))] + text + score
                                + [pa.field("id", pa.string()), pa.field("meta", pa.string())])

    def add(self, record: dict) -> None:
        r = dict(record)
        r["meta"] = json.dumps(r["meta"], default=str) if "meta" in r else None
        r["id"] = None if r.get("id") is None else str(r["id"])
        self.rows.append(r)
        if len(self.rows) >= self.size:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, self.schema)
        if self.rows:
            table = pa.Table.from_pylist(self.rows, schema=self.schema)
            self.writer.write_table(table, row_group_size=self.size)
        self.rows = []

    def close(self) -> None:
        self._flush()
        self.writer.close()


class JsonlWriter:
    def __init__(self, path: str):
        self.folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(os.path.join(self.folder, "images"), exist_ok=True)
        self.f, self.n = open(path, "w", encoding="utf-8"), 0

    def add(self, record: dict) -> None:
        r = dict(record)
        names = []
        for k, data in enumerate(r.get("images", [])):
            name = f"images/{self.n:07d}_{k}{_suffix(data)}"
            with open(os.path.join(self.folder, name), "wb") as f:
                f.write(data)
            names.append(name)
        if "images" in r:
            r["images"] = names
        self.f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
        self.n += 1

    def close(self) -> None:
        self.f.close()


def convert(src: str, out: str, cmap: ColumnMap, *, row_group_size: int = 64,
            limit: int | None = None) -> int:
    """Writes `out` (to a temporary name, renamed when complete); returns the row count."""
    if not out.endswith((".parquet", ".jsonl")):
        raise ValueError(f"{out}: the output must end in .parquet or .jsonl")
    base = src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))
    tmp = out + ".tmp"
    writer = (ParquetWriter(tmp, cmap.kind, row_group_size) if out.endswith(".parquet")
              else JsonlWriter(tmp))
    n = 0
    try:
        for where, row in iter_rows(src):
            if limit is not None and n >= limit:
                break
            writer.add(map_row(row, cmap, base, where))
            n += 1
        if n == 0:
            raise ValueError(f"{src}: no rows")
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return n
