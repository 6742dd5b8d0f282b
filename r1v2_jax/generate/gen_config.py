"""Sampling defaults from a checkpoint's `generation_config.json` (Hugging Face format).

Only the fields the engine implements are read: temperature, top_p, top_k,
repetition_penalty, max_new_tokens, eos_token_id (an id or a list) and do_sample
(false = greedy, temperature 0). A missing file gives {}; a field of the wrong type is an
error naming the file and the field, never silently dropped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

FILE = "generation_config.json"


def _number(data: dict, key: str, path: Path, check, what: str):
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not check(value):
        raise ValueError(f"{path}: field {key!r} must be {what}, got {value!r}")
    return value


def generation_defaults(folder: str | Path) -> dict:
    """{option name: value} of `folder/generation_config.json` ({} without the file)."""
    path = Path(folder) / FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    present = lambda k: data.get(k) is not None
    out: dict = {}
    if present("temperature"):
        out["temperature"] = float(_number(data, "temperature", path,
                                           lambda v: math.isfinite(v) and v >= 0, "a number >= 0"))
    if present("top_p"):
        out["top_p"] = float(_number(data, "top_p", path, lambda v: 0 < v <= 1,
                                     "a number in (0, 1]"))
    if present("top_k"):
        out["top_k"] = int(_number(data, "top_k", path, lambda v: v >= 0 and v == int(v),
                                   "an integer >= 0"))
    if present("repetition_penalty"):
        out["repetition_penalty"] = float(_number(data, "repetition_penalty", path,
                                                  lambda v: math.isfinite(v) and v > 0,
                                                  "a number > 0"))
    if present("max_new_tokens"):
        out["max_new_tokens"] = int(_number(data, "max_new_tokens", path,
                                            lambda v: v >= 1 and v == int(v), "an integer >= 1"))
    if present("eos_token_id"):
        ids = data["eos_token_id"]
        ids = [ids] if isinstance(ids, int) and not isinstance(ids, bool) else ids
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool)
                                                and i >= 0 for i in ids):
            raise ValueError(f"{path}: field 'eos_token_id' must be an id or a list of ids, "
                             f"got {data['eos_token_id']!r}")
        out["eos_token_id"] = tuple(ids)
    if "do_sample" in data:
        if not isinstance(data["do_sample"], bool):
            raise ValueError(f"{path}: field 'do_sample' must be true or false, got "
                             f"{data['do_sample']!r}")
        if not data["do_sample"]:
            out["temperature"] = 0.0  # transformers: greedy, whatever the temperature says
    return out
