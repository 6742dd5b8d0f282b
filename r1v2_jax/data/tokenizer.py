"""Tokenizer wrapper: encode/decode plus the special ids the pipeline needs.

Two sources, nothing downloaded:
- a local folder with a Hugging Face tokenizer (the real Qwen2 files of a checkpoint,
  `tokenizer_config.json` + `tokenizer.json`/vocab files), loaded with
  `transformers.AutoTokenizer` (imported lazily: transformers is an optional dependency);
- a `tokenizers` JSON file (e.g. the demo tokenizer built by `build_demo_tokenizer`).

Text is encoded without any automatically added BOS/EOS (Qwen2 adds none either): the
prompt builder writes every special token explicitly.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import string
from typing import Protocol, Sequence

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as RawTokenizer


@dataclasses.dataclass(frozen=True)
class SpecialTokenNames:
    """Strings of the special tokens; the defaults are Qwen2 ChatML + InternVL + R1 think."""

    eos: str = "<|im_end|>"
    pad: str = "<|endoftext|>"
    im_start: str = "<|im_start|>"
    img_start: str = "<img>"
    img_end: str = "</img>"
    img_context: str = "<IMG_CONTEXT>"
    think: str = "<think>"
    end_think: str = "</think>"
    unk: str = "<unk>"  # only used by the demo tokenizer


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    eos: int
    pad: int
    im_start: int
    img_start: int
    img_end: int
    img_context: int
    think: int | None  # None when the tokenizer spells `<think>` with ordinary pieces
    end_think: int | None


class TextBackend(Protocol):
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str: ...
    def token_to_id(self, token: str) -> int | None: ...
    def vocab_size(self) -> int: ...
    def save(self, path: str) -> None: ...


class _RawBackend:
    """A `tokenizers.Tokenizer`."""

    def __init__(self, tok: RawTokenizer):
        self.tok = tok

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens):
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token):
        return self.tok.token_to_id(token)

    def vocab_size(self):
        return self.tok.get_vocab_size(with_added_tokens=True)

    def save(self, path):
        self.tok.save(path)


class _HFBackend:
    """A transformers tokenizer (fast or slow) loaded from a folder."""

    def __init__(self, tok):
        self.tok = tok
        self._vocab = tok.get_vocab()  # includes added tokens

    def encode(self, text):
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids, skip_special_tokens):
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens,
                               clean_up_tokenization_spaces=False)

    def token_to_id(self, token):
        return self._vocab.get(token)

    def vocab_size(self):
        return len(self.tok)

    def save(self, path):
        self.tok.save_pretrained(path)


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    backend: TextBackend
    special: SpecialIds
    names: SpecialTokenNames  # the strings of `special`, used to write prompts
    source: str  # where it was loaded from (for error messages)
    # The checkpoint's jinja2 chat template (tokenizer_config.json or chat_template.jinja);
    # None for the demo tokenizer, whose prompts are the built-in ChatML of prompts.py.
    chat_template: str | None = None

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text)

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        return self.backend.vocab_size()

    @property
    def eos_id(self) -> int:
        return self.special.eos

    @property
    def pad_id(self) -> int:
        return self.special.pad

    @property
    def img_context_id(self) -> int:
        return self.special.img_context

    @functools.cached_property
    def image_context_is_atomic(self) -> bool:
        """Whether each `<IMG_CONTEXT>` copy in a text encodes to exactly one token (an
        added token, as in InternVL's tokenizers and the demo's): then prompt lengths can be
        counted without encoding every image placeholder."""
        n = self.names
        ids = self.encode(f"a{n.img_start}{n.img_context * 3}{n.img_end}")
        return ids[-5:] == [self.special.img_start, *[self.special.img_context] * 3,
                            self.special.img_end]

    def save(self, path: str | os.PathLike) -> None:
        """A `tokenizers` tokenizer writes one JSON file; a transformers one a folder."""
        self.backend.save(os.fspath(path))


def _resolve_ids(backend: TextBackend, names: SpecialTokenNames, source: str) -> SpecialIds:
    def need(field: str) -> int:
        token = getattr(names, field)
        tid = backend.token_to_id(token)
        if tid is None:
            raise ValueError(f"tokenizer {source} has no token {token!r} (special '{field}')")
        return tid

    return SpecialIds(
        eos=need("eos"), pad=need("pad"), im_start=need("im_start"),
        img_start=need("img_start"), img_end=need("img_end"), img_context=need("img_context"),
        think=backend.token_to_id(names.think), end_think=backend.token_to_id(names.end_think),
    )


def _default_template(template, source: str) -> str | None:
    """transformers holds several named templates as a dict; prompts use "default"."""
    if isinstance(template, dict):
        if "default" not in template:
            raise ValueError(f"tokenizer {source} has chat templates {sorted(template)} but "
                             "none named 'default'")
        return template["default"]
    return template


def from_raw(tok: RawTokenizer, names: SpecialTokenNames = SpecialTokenNames(),
             source: str = "<in memory>") -> Tokenizer:
    backend = _RawBackend(tok)
    return Tokenizer(backend, _resolve_ids(backend, names, source), names, source)


def load_tokenizer(path: str | os.PathLike,
                   names: SpecialTokenNames = SpecialTokenNames()) -> Tokenizer:
    """Loads a folder with `tokenizer_config.json` (AutoTokenizer) or a tokenizers JSON file.

    A folder holding only `tokenizer.json` is read with `tokenizers`. `chat_template` is
    the one transformers loads (tokenizer_config.json or chat_template.jinja), or the
    chat_template.jinja beside a lone tokenizer.json; None without one.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "tokenizer_config.json")):
            try:
                from transformers import AutoTokenizer
            except ImportError as err:
                raise ImportError(
                    f"loading the tokenizer folder {path} needs transformers "
                    "(pip install -e '.[torch]')") from err
            hf = AutoTokenizer.from_pretrained(path, local_files_only=True)
            backend = _HFBackend(hf)
            return Tokenizer(backend, _resolve_ids(backend, names, path), names, path,
                             _default_template(hf.chat_template, path))
        json_path = os.path.join(path, "tokenizer.json")
        if not os.path.exists(json_path):
            raise FileNotFoundError(
                f"tokenizer folder {path} has neither tokenizer_config.json nor tokenizer.json")
        template_path = os.path.join(path, "chat_template.jinja")
        tok = load_tokenizer(json_path, names)
        if os.path.exists(template_path):
            with open(template_path, encoding="utf-8") as f:
                tok = dataclasses.replace(tok, chat_template=f.read())
        return tok
    if not os.path.exists(path):
        raise FileNotFoundError(f"tokenizer not found: {path}")
    try:
        raw = RawTokenizer.from_file(path)
    except Exception as err:  # tokenizers raises a bare Exception on bad JSON
        raise ValueError(f"cannot read tokenizer file {path}: {err}") from err
    return from_raw(raw, names, path)


# Pieces of text the demo tokenizer splits into: letter runs and single digits, each with
# the space before it (as byte-level BPE vocabularies merge " word"; spelling the space
# separately would nearly double the demo's sequence lengths), single whitespace and
# single other characters (so any text is encodable and decode is exact).
DEMO_SPLIT_PATTERN = r" ?[A-Za-z]+| ?\d|\s|[^A-Za-z\d\s]"
DEMO_SYMBOLS = (tuple(" \n") + tuple(string.digits) + tuple(" " + d for d in string.digits)
                + tuple(string.punctuation))
CHATML_ROLES = ("system", "user", "assistant")


def build_demo_tokenizer(words: Sequence[str],
                         names: SpecialTokenNames = SpecialTokenNames()) -> Tokenizer:
    """A small word-level tokenizer: specials + whitespace/digits/punctuation + `words`.

    Ids: the unk and special tokens first, then symbols, the ChatML role names, then each
    word and the word with a leading space, in the given order (duplicates dropped).
    Words must be ASCII letter runs: anything else would never be produced by the
    pre-tokenizer. `<think>`/`</think>` are added as non-special tokens, as
    in the Qwen reasoning tokenizers, so `decode(skip_special_tokens=True)` keeps them.
    """
    bad = [w for w in words if not w.isascii() or not w.isalpha()]
    if bad:
        raise ValueError(f"demo vocabulary words must be ASCII letters only, got {bad[:5]}")
    special = [names.eos, names.pad, names.im_start, names.img_start, names.img_end,
               names.img_context]
    vocab: dict[str, int] = {}
    ordered = [names.unk, *special, names.think, names.end_think, *DEMO_SYMBOLS,
               *CHATML_ROLES, *(piece for w in words for piece in (w, " " + w))]
    for token in ordered:
        vocab.setdefault(token, len(vocab))
    raw = RawTokenizer(models.WordLevel(vocab, unk_token=names.unk))
    raw.pre_tokenizer = pre_tokenizers.Split(Regex(DEMO_SPLIT_PATTERN), behavior="isolated")
    raw.decoder = decoders.Fuse()
    raw.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in [names.unk, *special]])
    raw.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t in (names.think, names.end_think)])
    return from_raw(raw, names, "<demo>")
