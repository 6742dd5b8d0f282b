"""Every path a recipe reads or writes goes through `etils.epath`: local folders, `gs://`
buckets (gcsfs, in the `tpu`/`cuda` extras) and any fsspec store.

Records and their images are read by the input pipeline (`data/pipeline`, through
epath). A reader that needs a local folder (the transformers tokenizer loader) gets one via
`local_copy`, which copies a remote file or folder into a per-process cache once.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any

from etils import epath


def is_remote(path: str) -> bool:
    return "://" in str(path)


def join(base: str, *parts: str) -> str:
    return str(epath.Path(base).joinpath(*parts)) if is_remote(base) else os.path.join(base, *parts)


def exists(path: str) -> bool:
    return epath.Path(path).exists()


def read_json(path: str, *, what: str) -> Any:
    p = epath.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"config.{what}: {path} not found")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"config.{what}: {path} is not valid JSON ({err})") from None


def write_text_atomic(path: str, text: str) -> None:
    """Temporary file + rename, so a reader never sees half a file."""
    p = epath.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.parent / (p.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(p)


_CACHE = os.path.join(tempfile.gettempdir(), "r1v2_remote_cache")


def local_copy(path: str) -> str:
    """`path` itself when local; else a local copy of the file or folder (recursively)."""
    if not is_remote(path):
        return path
    src = epath.Path(path)
    dst = epath.Path(_CACHE) / hashlib.sha1(str(path).encode()).hexdigest()[:16] / src.name
    if not dst.exists():
        _copy(src, dst)
    return str(dst)


def _copy(src: epath.Path, dst: epath.Path) -> None:
    if src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
        for child in src.iterdir():
            _copy(child, dst / child.name)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
