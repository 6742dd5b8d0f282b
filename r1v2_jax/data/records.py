"""JSONL training records, validated up front, and a resumable shuffled order.

Prompt records (RL / SFT), one JSON object per line:
    {"images": ["img/0.png"], "question": "<image>\\nHow many ...?", "answer": "2",
     "answer_type": "number"}
Preference records (MPO / reward model):
    {"images": [...], "prompt": "...", "chosen": "<think>\\n...", "rejected": "<think>\\n...",
     "chosen_score": 1.0, "rejected_score": 0.0}          # scores optional
Both may carry "id" and "meta" (kept as is). Image paths may be relative to the JSONL
file's folder. A question without `<image>` tags gets one per image (InternVL chat
convention); otherwise the tags must match the images.

Every problem (a line that is not UTF-8 or not JSON, missing/extra/mistyped field, empty
answer, a gold answer that cannot be read as its answer_type - `answer_forms.parse_gold`,
the answer checker's own parser -, missing or corrupt image, tag mismatch, prompt over the
token budget) is a `RecordError` naming file:line and field; with on_invalid="skip" the
record is dropped and counted by reason instead, so a bad line fails at load time, never
hours into a run. A file with no valid record at all is an error either way.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import threading
from collections import Counter
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np

from r1v2_jax.data.answer_forms import CHOICE_LETTERS, InvalidGoldError, parse_gold
from r1v2_jax.data.image import ImageError, TilingConfig, image_size_of
from r1v2_jax.data.prompts import PromptConfig, completion_of, ensure_image_tags, prompt_text
from r1v2_jax.data.tokenizer import SpecialTokenNames, Tokenizer

ANSWER_TYPES = ("number", "choice", "text", "math")
ON_INVALID = ("error", "skip")


class RecordError(ValueError):
    def __init__(self, source: str, field: str | None, reason: str, message: str):
        super().__init__(f"{source}: field '{field}': {message}" if field else f"{source}: {message}")
        self.source, self.field, self.reason = source, field, reason


@dataclasses.dataclass(frozen=True)
class RecordRules:
    """What a valid record is. The token budgets need a tokenizer."""

    tiling: TilingConfig = TilingConfig()
    prompt: PromptConfig = PromptConfig()
    max_prompt_tokens: int | None = None  # prompt incl. image tokens
    max_completion_tokens: int | None = None  # preference responses (eos included)
    decode_images: bool = True  # fully decode each image (catches truncated files)
    on_invalid: str = "error"  # "error" | "skip"
    # gold answers are read as the answer checker reads them (AnswerCheckConfig's values)
    choice_letters: str = CHOICE_LETTERS
    gold_parse_timeout_s: int | None = 2  # math-verify's limit per gold (main thread only)

    def __post_init__(self):
        if self.on_invalid not in ON_INVALID:
            raise ValueError(f"on_invalid must be one of {ON_INVALID}, got {self.on_invalid!r}")


@dataclasses.dataclass(frozen=True)
class PromptRecord:
    images: tuple[str, ...]  # resolved paths
    question: str  # with one image tag per image
    answer: str
    answer_type: str
    num_tiles: tuple[int, ...]
    prompt_tokens: int | None  # None when no tokenizer was given
    source: str  # "file:line"
    meta: Any = None


@dataclasses.dataclass(frozen=True)
class PreferenceRecord:
    images: tuple[str, ...]
    prompt: str
    chosen: str
    rejected: str
    chosen_score: float | None
    rejected_score: float | None
    num_tiles: tuple[int, ...]
    prompt_tokens: int | None
    source: str
    meta: Any = None


@dataclasses.dataclass(frozen=True)
class LoadedRecords:
    records: tuple
    skipped: dict[str, int]  # reason -> count
    skip_messages: tuple[str, ...]  # the full error of each skipped line


def _field(obj: dict, name: str, kind: type | tuple, source: str, required: bool = True):
    if name not in obj:
        if required:
            raise RecordError(source, name, "missing_field", "missing")
        return None
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RecordError(source, name, "bad_type",
                          f"expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    return value


def _check_keys(obj: dict, allowed: set[str], source: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise RecordError(source, unknown[0], "unknown_field",
                          f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")


def _images(obj: dict, base: str, rules: RecordRules, source: str):
    paths = _field(obj, "images", list, source, required=False) or []
    resolved, tiles = [], []
    for k, p in enumerate(paths):
        name = f"images[{k}]"
        if not isinstance(p, str) or not p:
            raise RecordError(source, name, "bad_type", "expected a non-empty path string")
        full = p if os.path.isabs(p) else os.path.join(base, p)
        if not os.path.exists(full):
            raise RecordError(source, name, "image_missing", f"image not found: {full}")
        try:
            w, h = image_size_of(full, decode=rules.decode_images)
        except ImageError as err:
            raise RecordError(source, name, "image_corrupt", str(err)) from err
        resolved.append(full)
        tiles.append(rules.tiling.num_tiles(w, h))
    return tuple(resolved), tuple(tiles)


def _count_prompt_tokens(tagged: str, tiles, prompt, tokenizer) -> int:
    """len(encode_prompt(...)) without encoding every image placeholder: `<IMG_CONTEXT>` is
    one added token (the tokenizer's img_context_id), split out before any merge, so
    each of the num_image_token x tiles copies of an image adds exactly one token. Encoding
    13 x 256 copies per 448-px photo made prevalidation ~60x slower. (A tokenizer where
    the copies are not single tokens is counted the slow way: the same number.)"""
    if not tokenizer.image_context_is_atomic:
        return len(tokenizer.encode(prompt_text(tagged, tiles, prompt, tokenizer.names)))
    one = dataclasses.replace(prompt, num_image_token=1)
    short = prompt_text(tagged, [1] * len(tiles), one, tokenizer.names)
    return len(tokenizer.encode(short)) + sum(prompt.num_image_token * t - 1 for t in tiles)


def _prompt_tokens(text_field: str, text: str, tiles, tokenizer, rules, source) -> int | None:
    tagged = ensure_image_tags(text, len(tiles), rules.prompt.image_tag)
    try:  # built only to check the image tags (the count below needs no full prompt)
        prompt_text(tagged, tiles, rules.prompt,
                    tokenizer.names if tokenizer is not None else SpecialTokenNames())
    except ValueError as err:
        raise RecordError(source, text_field, "image_tags", str(err)) from err
    if tokenizer is None:
        return None
    n = _count_prompt_tokens(tagged, tiles, rules.prompt, tokenizer)
    if rules.max_prompt_tokens is not None and n > rules.max_prompt_tokens:
        raise RecordError(source, text_field, "prompt_too_long",
                          f"prompt is {n} tokens (images included), budget "
                          f"{rules.max_prompt_tokens}")
    return n


def _nonempty(obj: dict, name: str, source: str, reason: str) -> str:
    value = _field(obj, name, str, source)
    if not value.strip():
        raise RecordError(source, name, reason, "empty")
    return value


@functools.lru_cache(maxsize=4096)
def _gold_problem(answer: str, answer_type: str, letters: str, timeout_s: int | None) -> str | None:
    """Why `answer` cannot be read as `answer_type` (None if it can); cached: datasets
    repeat their golds."""
    try:
        parse_gold(answer, answer_type, letters=letters, timeout_s=timeout_s)
    except InvalidGoldError as err:
        return str(err)
    except BaseException as err:  # sympy errors; math-verify's TimeoutException is a BaseException
        if type(err).__name__ == "TimeoutException":
            return f"{answer[:80]!r}: reading it took over {timeout_s} s"
        if not isinstance(err, Exception):  # Ctrl-C, SystemExit
            raise
        return f"{answer[:80]!r} cannot be read ({type(err).__name__}: {err})"
    return None


def _check_gold(answer: str, answer_type: str, rules: RecordRules, source: str) -> None:
    # math-verify's timeout is signal.alarm, which only the main thread may set
    main = threading.current_thread() is threading.main_thread()
    problem = _gold_problem(answer, answer_type, rules.choice_letters,
                            rules.gold_parse_timeout_s if main else None)
    if problem is not None:
        raise RecordError(source, "answer", "bad_answer", f"{problem} (answer_type "
                                                           f"{answer_type!r})")


ImagesOf = Callable[[dict, str, "RecordRules"], tuple[tuple, tuple[int, ...]]]


def _images_at(base: str) -> ImagesOf:
    """Images given as paths (absolute, or relative to the records file's folder `base`)."""
    return lambda obj, source, rules: _images(obj, base, rules, source)


def parse_prompt_record(obj: dict, base: str, source: str, rules: RecordRules,
                        tokenizer: Tokenizer | None, *, images_of: ImagesOf | None = None,
                        gold: bool = True) -> PromptRecord:
    """images_of: how the `images` field is read (default: paths beside the file; the
    streaming pipeline passes its own, which also takes image bytes). gold: parse the gold
    answer for its type (the pipeline may defer it)."""
    _check_keys(obj, {"images", "question", "answer", "answer_type", "id", "meta"}, source)
    images, tiles = (images_of or _images_at(base))(obj, source, rules)
    question = _nonempty(obj, "question", source, "empty_question")
    answer = _nonempty(obj, "answer", source, "empty_answer")
    answer_type = _field(obj, "answer_type", str, source)
    if answer_type not in ANSWER_TYPES:
        raise RecordError(source, "answer_type", "bad_answer_type",
                          f"{answer_type!r} is not one of {ANSWER_TYPES}")
    if gold:
        _check_gold(answer, answer_type, rules, source)
    n = _prompt_tokens("question", question, tiles, tokenizer, rules, source)
    return PromptRecord(images, ensure_image_tags(question, len(tiles), rules.prompt.image_tag),
                        answer, answer_type, tiles, n, source, obj.get("meta"))


def parse_preference_record(obj: dict, base: str, source: str, rules: RecordRules,
                            tokenizer: Tokenizer | None, *, images_of: ImagesOf | None = None,
                            gold: bool = True) -> PreferenceRecord:
    """images_of, gold: as for `parse_prompt_record` (preference records have no gold)."""
    _check_keys(obj, {"images", "prompt", "chosen", "rejected", "chosen_score",
                      "rejected_score", "id", "meta"}, source)
    images, tiles = (images_of or _images_at(base))(obj, source, rules)
    prompt = _nonempty(obj, "prompt", source, "empty_prompt")
    responses = {}
    for name in ("chosen", "rejected"):
        text = _nonempty(obj, name, source, f"empty_{name}")
        try:
            completion = completion_of(text, rules.prompt)
        except ValueError as err:
            raise RecordError(source, name, "bad_response", str(err)) from err
        if tokenizer is not None and rules.max_completion_tokens is not None:
            m = len(tokenizer.encode(completion)) + 1  # + <|im_end|>
            if m > rules.max_completion_tokens:
                raise RecordError(source, name, "completion_too_long",
                                  f"{m} tokens, budget {rules.max_completion_tokens}")
        responses[name] = text
    if responses["chosen"] == responses["rejected"]:
        raise RecordError(source, "rejected", "identical_pair", "equals 'chosen'")
    scores = [_field(obj, k, (int, float), source, required=False)
              for k in ("chosen_score", "rejected_score")]
    for k, v in zip(("chosen_score", "rejected_score"), scores):
        if v is not None and not np.isfinite(v):
            raise RecordError(source, k, "bad_type", f"not a finite number: {v}")
    n = _prompt_tokens("prompt", prompt, tiles, tokenizer, rules, source)
    return PreferenceRecord(
        images, ensure_image_tags(prompt, len(tiles), rules.prompt.image_tag),
        responses["chosen"], responses["rejected"],
        *(None if s is None else float(s) for s in scores), tiles, n, source, obj.get("meta"))


def _load(path: str, parse: Callable, rules: RecordRules, tokenizer) -> LoadedRecords:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"records file not found: {path}")
    budgets = (rules.max_prompt_tokens, rules.max_completion_tokens)
    if tokenizer is None and any(b is not None for b in budgets):
        raise ValueError(f"{path}: a token budget is set but no tokenizer was given")
    base = os.path.dirname(os.path.abspath(path))
    records, skipped, messages = [], Counter(), []
    with open(path, "rb") as f:  # decoded per line: a bad byte names its line
        for lineno, raw in enumerate(f, 1):
            source = f"{path}:{lineno}"
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise RecordError(source, "<line>", "bad_encoding",
                                      f"not UTF-8 (byte {err.start}: {raw[err.start:err.start + 1]!r})")
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise RecordError(source, "<line>", "bad_json", f"invalid JSON: {err}")
                if not isinstance(obj, dict):
                    raise RecordError(source, "<line>", "bad_json", "expected a JSON object")
                records.append(parse(obj, base, source, rules, tokenizer))
            except RecordError as err:
                if rules.on_invalid == "error":
                    raise
                skipped[err.reason] += 1
                messages.append(str(err))
    if not records:
        why = (f"all {sum(skipped.values())} record(s) are invalid and were skipped: "
               f"{dict(skipped)}" if skipped else "the file holds no records")
        raise RecordError(path, None, "no_records", f"no valid records ({why})")
    return LoadedRecords(tuple(records), dict(skipped), tuple(messages))


def load_prompt_records(path: str | os.PathLike, rules: RecordRules = RecordRules(),
                        tokenizer: Tokenizer | None = None) -> LoadedRecords:
    return _load(path, parse_prompt_record, rules, tokenizer)


def load_preference_records(path: str | os.PathLike, rules: RecordRules = RecordRules(),
                            tokenizer: Tokenizer | None = None) -> LoadedRecords:
    return _load(path, parse_preference_record, rules, tokenizer)


R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class DataState:
    """Position in the shuffled stream: the next record is order(epoch)[index]."""

    epoch: int = 0
    index: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    @classmethod
    def from_dict(cls, d: dict) -> "DataState":
        return cls(epoch=int(d["epoch"]), index=int(d["index"]))


@functools.lru_cache(maxsize=8)
def epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The record order of one epoch: a permutation that depends only on (n, seed, epoch)."""
    return tuple(int(i) for i in np.random.default_rng([seed, epoch]).permutation(n))


def next_batch(records: Sequence[R], batch_size: int, state: DataState,
               seed: int) -> tuple[list[R], DataState]:
    """`batch_size` records from `state` on (crossing into the next epoch if needed)."""
    if not records:
        raise ValueError("no records to iterate over")
    if not 0 <= state.index <= len(records):
        # a position past the end means the records changed since the state was saved
        raise ValueError(f"data state {state} does not fit {len(records)} records")
    batch, epoch, index = [], state.epoch, state.index
    while len(batch) < batch_size:
        if index >= len(records):
            epoch, index = epoch + 1, 0
        order = epoch_order(len(records), seed, epoch)
        take = min(batch_size - len(batch), len(records) - index)
        batch += [records[i] for i in order[index:index + take]]
        index += take
    return batch, DataState(epoch, index)


def iterate(records: Sequence[R], seed: int,
            state: DataState = DataState()) -> Iterator[tuple[R, DataState]]:
    """Endless (record, state after it); restarting from that state continues exactly."""
    while True:
        (record,), state = next_batch(records, 1, state, seed)
        yield record, state
