"""Reading a Hugging Face checkpoint (either layout) into the JAX parameter tree.

`open_hf_checkpoint` validates everything up front — config fields, files, every tensor's
presence, shape and dtype — so converters can stream afterwards without surprises.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

import numpy as np

from r1v2_jax.convert.errors import ConversionError
from r1v2_jax.convert.hf_config import read_hf_config
from r1v2_jax.convert.mapping import LeafPath, TensorRule, rules_for, unflatten
from r1v2_jax.convert.safetensors_files import FLOAT_DTYPES, TensorInfo, read_tensor, scan_folder
from r1v2_jax.models.config import VLMConfig

# Layout B: transformers reads both the saved and the in-memory module names.
_B_SPELLINGS = (("model.vision_tower.", "vision_tower."),
                ("model.multi_modal_projector.", "multi_modal_projector."),
                ("model.language_model.", "language_model.model."),
                ("lm_head.", "language_model.lm_head."))
LM_HEAD = "language_model.lm_head.weight"
EMBED = "language_model.model.embed_tokens.weight"


def resolve_dtype(dtype) -> np.dtype:
    """'bfloat16' / 'float32' / np.dtype ... -> a numpy float dtype (ml_dtypes for bf16)."""
    by_name = {d.name: d for d in FLOAT_DTYPES.values()}
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in by_name:
        raise ConversionError(f"dtype {dtype!r} is not supported; use one of {sorted(by_name)}")
    return by_name[name]


@dataclasses.dataclass(frozen=True)
class HFCheckpoint:
    """A validated checkpoint: what to read, from where, and into which dtype."""

    path: Path
    config: VLMConfig
    layout: str
    rules: tuple[TensorRule, ...]
    tensors: dict[str, TensorInfo]  # canonical key -> where it is
    leaf_dtypes: dict[LeafPath, np.dtype]

    @property
    def nbytes(self) -> int:
        return sum(info.nbytes for info in self.tensors.values())

    def pieces(self) -> Iterator[tuple[TensorRule, int | None, list[np.ndarray]]]:
        """(rule, layer, JAX pieces already cast) for every tensor, one tensor in memory."""
        for rule in self.rules:
            for key, layer in rule.instances():
                # No local keeps a tensor alive while suspended: memory holds one at a time.
                yield rule, layer, [p.astype(self.leaf_dtypes[leaf], copy=False) for p, leaf in
                                    zip(rule.to_jax(read_tensor(self.tensors[key])), rule.leaves)]


def _canonical(key: str, layout: str) -> str:
    if layout == "hf":
        for alias, canonical in _B_SPELLINGS:
            if key.startswith(alias):
                return canonical + key[len(alias):]
    return key


def open_hf_checkpoint(path: str | Path, *, dtype=None) -> HFCheckpoint:
    """Validates the checkpoint folder `path`; raises ConversionError naming every problem."""
    path = Path(path)
    config, layout = read_hf_config(path)
    out_dtype = None if dtype is None else resolve_dtype(dtype)
    found = scan_folder(path)
    problems: list[str] = []
    tensors: dict[str, TensorInfo] = {}
    for key, info in found.items():
        canonical = _canonical(key, layout)
        if canonical in tensors:
            problems.append(f"{info.where()} duplicates {tensors[canonical].where()}")
        tensors[canonical] = info
    rules = rules_for(config, layout)
    implied = sum(max(rule.num_layers, 1) for rule in rules)
    if implied > 2 * len(tensors) + 64:  # a layer count far beyond the files: name it
        raise ConversionError(  # before listing (or looping over) every missing tensor
            f"{path / 'config.json'}: the layer counts (vision num_hidden_layers="
            f"{config.vision.num_hidden_layers}, text num_hidden_layers="
            f"{config.text.num_hidden_layers}) imply {implied} tensors, but the safetensors "
            f"files hold {len(tensors)}")
    expected = {key: rule for rule in rules for key, _ in rule.instances()}
    tied_head = tensors.pop(LM_HEAD, None) if config.text.tie_word_embeddings else None
    for key in sorted(set(expected) - set(tensors)):
        problems.append(f"missing tensor {key!r} (not in any file of {path})")
    for key in sorted(set(tensors) - set(expected)):
        problems.append(f"unexpected {tensors[key].where()} (not part of this config's model)")
    leaf_sources: dict[LeafPath, TensorInfo] = {}
    leaf_dtypes: dict[LeafPath, np.dtype] = {}
    for key in sorted(set(expected) & set(tensors)):
        rule, info = expected[key], tensors[key]
        if info.dtype not in FLOAT_DTYPES:
            problems.append(f"{info.where()} has dtype {info.dtype}; expected a floating dtype "
                            f"({'/'.join(FLOAT_DTYPES)})")
            continue
        if info.shape != rule.hf_shape:
            problems.append(f"{info.where()} has shape {list(info.shape)}; the config implies "
                            f"{list(rule.hf_shape)}")
        for leaf in rule.leaves:
            first = leaf_sources.setdefault(leaf, info)
            if out_dtype is None and first.dtype != info.dtype:
                problems.append(f"{info.where()} is {info.dtype} but {first.where()} (same "
                                f"stacked parameter) is {first.dtype}; pass dtype= to cast")
            leaf_dtypes[leaf] = out_dtype or FLOAT_DTYPES[first.dtype]
    if problems:
        raise ConversionError(problems)
    if tied_head is not None:
        _check_tied_head(tied_head, tensors[EMBED])
    names = {d.name for d in leaf_dtypes.values()}
    if len(names) == 1:  # record the stored dtype so the model is built to match
        config = config.replace(param_dtype=names.pop())
    return HFCheckpoint(path, config, layout, tuple(rules), tensors, leaf_dtypes)


def _check_tied_head(head: TensorInfo, embed: TensorInfo) -> None:
    """transformers ties only when both tensors are equal; we refuse rather than untie."""
    if head.shape == embed.shape and head.dtype == embed.dtype and np.array_equal(
            read_tensor(head), read_tensor(embed)):
        return
    raise ConversionError(f"{head.where()} differs from {embed.where()} although config.json "
                          "sets tie_word_embeddings=true; fix the config or the weights")


def load_hf(path: str | Path, *, dtype=None) -> tuple[VLMConfig, dict]:
    """(config, params): the checkpoint in `path` as the JAX tree of docs/PARAMS.md (numpy).

    dtype: None keeps each tensor's stored dtype, else "bfloat16", "float32", ...
    """
    ckpt = open_hf_checkpoint(path, dtype=dtype)
    flat: dict[LeafPath, np.ndarray] = {}
    for rule, layer, pieces in ckpt.pieces():
        for leaf, shape, piece in zip(rule.leaves, rule.leaf_shapes, pieces):
            if layer is None:
                flat[leaf] = piece
                continue
            if leaf not in flat:
                flat[leaf] = np.empty((rule.num_layers,) + shape, ckpt.leaf_dtypes[leaf])
            flat[leaf][layer] = piece
    return ckpt.config, unflatten(flat)
