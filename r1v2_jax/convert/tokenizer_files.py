"""Copying a checkpoint's tokenizer files (and chat template) from one model folder to another.

Every model folder the project writes (`convert to-jax`, `convert to-hf`, a run's `final/`)
carries the tokenizer it was trained with, so `load_tokenizer(folder)`,
`AutoTokenizer.from_pretrained(folder)` and `r1v2 generate --ckpt folder` need nothing else.
Files are copied byte for byte through `etils.epath` (local, `gs://`, ...).
"""

from __future__ import annotations

import os

from r1v2_jax.convert.errors import ConversionError
from r1v2_jax.convert.orbax_io import as_abs_path

# What Qwen2/InternVL checkpoints ship for their tokenizer; the chat template lives in
# tokenizer_config.json ("chat_template") or, in newer transformers, chat_template.jinja.
TOKENIZER_FILES = (
    "tokenizer.json",  # the fast tokenizer (`tokenizers` JSON)
    "tokenizer_config.json",  # class, special tokens, chat template
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",  # byte-level BPE vocabulary (slow tokenizer)
    "merges.txt",
    "tokenizer.model",  # sentencepiece models
    "chat_template.jinja",
    "chat_template.json",
)


def find_tokenizer_files(src: str | os.PathLike) -> list[str]:
    """Names of TOKENIZER_FILES present in folder `src` (a tokenizers JSON file: its name)."""
    src = as_abs_path(src)
    if src.is_file():
        return [src.name]
    if not src.is_dir():
        raise ConversionError(f"{src}: no such tokenizer folder or file")
    return [name for name in TOKENIZER_FILES if (src / name).is_file()]


def copy_tokenizer_files(src_dir: str | os.PathLike, dst_dir: str | os.PathLike, *,
                         required: bool = True) -> list[str]:
    """Copies the tokenizer files of `src_dir` into the existing folder `dst_dir`.

    `src_dir` may also be a single `tokenizers` JSON file (the demo tokenizer), copied as
    `tokenizer.json`. Returns the names written. Refuses to overwrite a file in `dst_dir`.
    required: with no tokenizer file in `src_dir`, raise (True) or copy nothing (False).
    """
    src, dst = as_abs_path(src_dir), as_abs_path(dst_dir)
    if not dst.is_dir():
        raise ConversionError(f"{dst}: destination folder does not exist")
    if src.is_file():
        pairs = [(src, "tokenizer.json")]
    else:
        pairs = [(src / name, name) for name in find_tokenizer_files(src)]
    if not pairs:
        if required:
            raise ConversionError(f"{src}: no tokenizer files (expected some of "
                                  f"{', '.join(TOKENIZER_FILES)})")
        return []
    clash = [name for _, name in pairs if (dst / name).exists()]
    if clash:
        raise ConversionError(f"{dst}: already has {', '.join(clash)}; refusing to overwrite")
    for file, name in pairs:
        # read + write rather than copy: source and destination may be different stores
        (dst / name).write_bytes(file.read_bytes())
    return [name for _, name in pairs]
