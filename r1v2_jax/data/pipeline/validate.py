"""A row -> a checked record view, by records.py's rules with its messages and reasons.

The helpers of records.py (`_field`, `_check_keys`, `_nonempty`, `_check_gold`,
`_prompt_tokens`) do the checking; only the images differ: a reference may be encoded
bytes (parquet, TFDS) as well as a path, and the check reads the header only unless
`rules.decode_images` (then the whole image, as records.py does). A view keeps the image
references, not pixels: decoding happens in the loader's workers (decode.py).

`prevalidate` runs the cheap checks over every row before training (each host reads the
whole source: the global order needs the same valid rows everywhere) and returns the
indices of the valid rows; with on_invalid="error" the first bad row raises
`RecordError` naming `source:row`.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections import Counter
from typing import Any, Callable

import numpy as np
from etils import epath
from PIL import Image

from r1v2_jax.data import records as rec
from r1v2_jax.data.image import ImageError
from r1v2_jax.data.prompts import completion_of
from r1v2_jax.data.sft_records import parse_sft_record
from r1v2_jax.data.tokenizer import Tokenizer

KINDS = ("prompt", "preference", "sft")
_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def read_image_bytes(ref, where: str) -> bytes:
    if isinstance(ref, bytes):
        return ref
    p = epath.Path(ref)
    if not p.exists():
        raise ImageError(f"image not found: {ref}")
    return p.read_bytes()


def open_image_ref(ref, where: str, *, decode: bool = True):
    """An image reference -> RGB PIL image, fully decoded (or, without `decode`, only its
    (width, height) from the header); a bad one is an `ImageError` naming the path (or
    the row's field, for bytes)."""
    name = ref if isinstance(ref, str) else where
    local = isinstance(ref, str) and "://" not in ref
    if local and not os.path.exists(ref):
        raise ImageError(f"image not found: {ref}")
    # a local path is opened by name (a header read stays a header read; PIL's messages
    # are records.py's); bytes and remote files through memory
    fp = ref if local else io.BytesIO(read_image_bytes(ref, where))
    try:
        with Image.open(fp) as img:
            if not decode:
                return img.size
            img.load()  # truncated data fails here
            return img.convert("RGB")
    except _PIL_ERRORS as err:
        raise ImageError(f"cannot read image {name}: {err}") from err


def _images(obj: dict, source: str, rules: rec.RecordRules):
    refs = rec._field(obj, "images", list, source, required=False) or []
    tiles = []
    for k, ref in enumerate(refs):
        name = f"images[{k}]"
        if not isinstance(ref, (str, bytes)) or not ref:
            raise rec.RecordError(source, name, "bad_type",
                                  "expected a non-empty path string or image bytes")
        try:
            w, h = (open_image_ref(ref, f"{source} {name}").size if rules.decode_images
                    else open_image_ref(ref, f"{source} {name}", decode=False))
        except ImageError as err:
            reason = "image_missing" if "not found" in str(err) else "image_corrupt"
            raise rec.RecordError(source, name, reason, str(err)) from err
        tiles.append(rules.tiling.num_tiles(w, h))
    return tuple(refs), tuple(tiles)


def _with_image_refs(parse):
    """records.py's own parser (same rules and messages), reading images as paths or bytes."""
    def check(obj, source, rules, tokenizer, gold=True):
        return parse(obj, "", source, rules, tokenizer, images_of=_images, gold=gold)
    check.__name__ = f"check_{parse.__name__.removeprefix('parse_').removesuffix('_record')}"
    return check


check_prompt = _with_image_refs(rec.parse_prompt_record)
check_preference = _with_image_refs(rec.parse_preference_record)
check_sft = _with_image_refs(parse_sft_record)


CHECKS: dict[str, Callable] = {"prompt": check_prompt, "preference": check_preference,
                               "sft": check_sft}


def check_row(source, i: int, kind: str, rules, tokenizer, *, gold: bool = True):
    """Row `i` of `source` as a record view, or `RecordError`."""
    return CHECKS[kind](source[i], source.name(i), rules, tokenizer, gold)


def _completion_tokens(kind: str, r, tokenizer: Tokenizer, prompt) -> int:
    """Tokens of the SFT completion / the longer preference response, eos included
    (as decode.py builds them)."""
    texts = (r.response,) if kind == "sft" else (r.chosen, r.rejected)
    return max(len(tokenizer.encode(completion_of(t, prompt))) + 1 for t in texts)


@dataclasses.dataclass(frozen=True)
class Validated:
    indices: np.ndarray  # int64: the valid rows, ascending
    num_rows: int
    skipped: dict[str, int]  # reason -> count
    skip_messages: tuple[str, ...]
    stats: dict[str, Any]  # tiles per image, prompt tokens, answer types (`r1v2 data stats`)


def prevalidate(source, kind: str, rules: rec.RecordRules = rec.RecordRules(),
                tokenizer: Tokenizer | None = None) -> Validated:
    """The cheap checks on every row, in the calling (main) thread: math-verify's time
    limit on gold answers needs it."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if tokenizer is None and (rules.max_prompt_tokens, rules.max_completion_tokens) != (None,
                                                                                        None):
        raise ValueError(f"{source.path}: a token budget is set but no tokenizer was given")
    valid, skipped, messages = [], Counter(), []
    tiles, prompt_tokens, answer_types = Counter(), [], Counter()
    most_tiles, longest_completion, longest_sequence = 0, 0, 0
    for i in range(len(source)):
        try:
            r = check_row(source, i, kind, rules, tokenizer)
        except rec.RecordError as err:
            if rules.on_invalid == "error":
                raise
            skipped[err.reason] += 1
            messages.append(str(err))
            continue
        valid.append(i)
        tiles.update(r.num_tiles)
        most_tiles = max(most_tiles, sum(r.num_tiles))
        if tokenizer is not None:
            completion = 0 if kind == "prompt" else _completion_tokens(kind, r, tokenizer,
                                                                       rules.prompt)
            longest_completion = max(longest_completion, completion)
            longest_sequence = max(longest_sequence, r.prompt_tokens + completion)
        if r.prompt_tokens is not None:
            prompt_tokens.append(r.prompt_tokens)
        answer_types[getattr(r, "answer_type", None) or "-"] += 1
    if not valid:
        why = (f"all {sum(skipped.values())} record(s) are invalid and were skipped: "
               f"{dict(skipped)}" if skipped else "the source holds no records")
        raise rec.RecordError(source.path, None, "no_records", f"no valid records ({why})")
    stats = {"tiles_per_image": dict(sorted(tiles.items())),
             "prompt_tokens": prompt_tokens, "answer_types": dict(answer_types),
             # the static shapes a trainer streaming this source needs (train/feed.py)
             "max_tiles": most_tiles, "max_completion_tokens": longest_completion,
             "max_sequence_tokens": longest_sequence}
    return Validated(np.asarray(valid, np.int64), len(source), dict(skipped), tuple(messages),
                     stats)
