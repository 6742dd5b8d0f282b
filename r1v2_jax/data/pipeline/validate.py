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
from r1v2_jax.data.prompts import completion_of, ensure_image_tags
from r1v2_jax.data.sft_records import SFTRecord
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


def check_prompt(obj, source, rules, tokenizer, gold=True) -> rec.PromptRecord:
    rec._check_keys(obj, {"images", "question", "answer", "answer_type", "id", "meta"}, source)
    images, tiles = _images(obj, source, rules)
    question = rec._nonempty(obj, "question", source, "empty_question")
    answer = rec._nonempty(obj, "answer", source, "empty_answer")
    answer_type = rec._field(obj, "answer_type", str, source)
    if answer_type not in rec.ANSWER_TYPES:
        raise rec.RecordError(source, "answer_type", "bad_answer_type",
                              f"{answer_type!r} is not one of {rec.ANSWER_TYPES}")
    if gold:
        rec._check_gold(answer, answer_type, rules, source)
    n = rec._prompt_tokens("question", question, tiles, tokenizer, rules, source)
    return rec.PromptRecord(images, ensure_image_tags(question, len(tiles), rules.prompt.image_tag),
                            answer, answer_type, tiles, n, source, obj.get("meta"))


def check_preference(obj, source, rules, tokenizer, gold=True) -> rec.PreferenceRecord:
    rec._check_keys(obj, {"images", "prompt", "chosen", "rejected", "chosen_score",
                          "rejected_score", "id", "meta"}, source)
    images, tiles = _images(obj, source, rules)
    prompt = rec._nonempty(obj, "prompt", source, "empty_prompt")
    responses = {}
    for name in ("chosen", "rejected"):
        text = rec._nonempty(obj, name, source, f"empty_{name}")
        try:
            completion = completion_of(text, rules.prompt)
        except ValueError as err:
            raise rec.RecordError(source, name, "bad_response", str(err)) from err
        if tokenizer is not None and rules.max_completion_tokens is not None:
            m = len(tokenizer.encode(completion)) + 1  # + <|im_end|>
            if m > rules.max_completion_tokens:
                raise rec.RecordError(source, name, "completion_too_long",
                                      f"{m} tokens, budget {rules.max_completion_tokens}")
        responses[name] = text
    if responses["chosen"] == responses["rejected"]:
        raise rec.RecordError(source, "rejected", "identical_pair", "equals 'chosen'")
    scores = [rec._field(obj, k, (int, float), source, required=False)
              for k in ("chosen_score", "rejected_score")]
    for k, v in zip(("chosen_score", "rejected_score"), scores):
        if v is not None and not np.isfinite(v):
            raise rec.RecordError(source, k, "bad_type", f"not a finite number: {v}")
    n = rec._prompt_tokens("prompt", prompt, tiles, tokenizer, rules, source)
    return rec.PreferenceRecord(
        images, ensure_image_tags(prompt, len(tiles), rules.prompt.image_tag),
        responses["chosen"], responses["rejected"],
        *(None if s is None else float(s) for s in scores), tiles, n, source, obj.get("meta"))


def check_sft(obj, source, rules, tokenizer, gold=True) -> SFTRecord:
    rec._check_keys(obj, {"images", "question", "response", "answer", "answer_type", "id",
                          "meta"}, source)
    images, tiles = _images(obj, source, rules)
    question = rec._nonempty(obj, "question", source, "empty_question")
    response = rec._nonempty(obj, "response", source, "empty_response")
    try:
        completion_of(response, rules.prompt)
    except ValueError as err:
        raise rec.RecordError(source, "response", "bad_response", str(err)) from err
    n = rec._prompt_tokens("question", question, tiles, tokenizer, rules, source)
    return SFTRecord(images, ensure_image_tags(question, len(tiles), rules.prompt.image_tag),
                     response, tiles, n, source, obj.get("meta"))


CHECKS: dict[str, Callable] = {"prompt": check_prompt, "preference": check_preference,
                               "sft": check_sft}


def check_row(source, i: int, kind: str, rules, tokenizer, *, gold: bool = True):
    """Row `i` of `source` as a record view, or `RecordError`."""
    return CHECKS[kind](source[i], source.name(i), rules, tokenizer, gold)


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
        if r.prompt_tokens is not None:
            prompt_tokens.append(r.prompt_tokens)
        answer_types[getattr(r, "answer_type", None) or "-"] += 1
    if not valid:
        why = (f"all {sum(skipped.values())} record(s) are invalid and were skipped: "
               f"{dict(skipped)}" if skipped else "the source holds no records")
        raise rec.RecordError(source.path, None, "no_records", f"no valid records ({why})")
    stats = {"tiles_per_image": dict(sorted(tiles.items())),
             "prompt_tokens": prompt_tokens, "answer_types": dict(answer_types)}
    return Validated(np.asarray(valid, np.int64), len(source), dict(skipped), tuple(messages),
                     stats)
