"""The id of an added token (e.g. `<IMG_CONTEXT>`) from a checkpoint folder's tokenizer files.

Layout A's config.json does not store the image token id: the remote code asks the
tokenizer. Checkpoints ship one or more of tokenizer.json (fast), added_tokens.json and
tokenizer_config.json (`added_tokens_decoder`); every file that names the token must agree.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

from r1v2_jax.convert.errors import ConversionError


def find_token_id(folder: Path, token: str) -> int | None:
    """The token's id, or None when no tokenizer file in `folder` names it."""
    found: dict[str, int] = {}
    fast = folder / "tokenizer.json"
    if fast.is_file():
        try:
            token_id = Tokenizer.from_file(str(fast)).token_to_id(token)
        except Exception as err:  # the tokenizers library raises a bare Exception
            raise ConversionError(f"{fast}: unreadable tokenizer ({err})") from None
        if token_id is not None:
            found[fast.name] = token_id
    added = _json(folder / "added_tokens.json")
    if added is not None and token in added:
        found["added_tokens.json"] = added[token]
    tok_cfg = _json(folder / "tokenizer_config.json")
    if tok_cfg is not None:
        for token_id, entry in (tok_cfg.get("added_tokens_decoder") or {}).items():
            if isinstance(entry, dict) and entry.get("content") == token:
                found["tokenizer_config.json"] = int(token_id)
    ids = set(found.values())
    if len(ids) > 1:
        raise ConversionError(f"{folder}: tokenizer files disagree on the id of {token}: {found}")
    return ids.pop() if ids else None


def _json(file: Path) -> dict | None:
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ConversionError(f"{file}: invalid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{file}: expected a JSON object")
    return data
