"""The files beside the weights that make a Hugging Face folder usable for inference.

Both layouts get the tokenizer files (with the chat template) of the JAX folder and
`generation_config.json`. Layout "hf" also gets what transformers' `AutoProcessor` reads
for InternVL (`InternVLProcessor` = `GotOcr2ImageProcessor` + tokenizer):

  preprocessor_config.json  InternVL dynamic tiling: tile size, min/max tiles, ImageNet
                            mean/std, bicubic, /255. The PIL backend reproduces
                            `r1v2_jax.data.image` exactly (tests/convert/test_processor_files.py);
                            transformers' torchvision backend resizes with torch.
  processor_config.json     image_seq_length = <IMG_CONTEXT> tokens per tile.
  tokenizer_config.json     + `extra_special_tokens` naming <img>, </img>, <IMG_CONTEXT>
                            (and InternVL's <video>), which the processor looks up.
"""

from __future__ import annotations

import json
from pathlib import Path

from r1v2_jax.convert.errors import ConversionError
from r1v2_jax.convert.tokenizer_files import copy_tokenizer_files
from r1v2_jax.convert.tokenizer_ids import find_token_id
from r1v2_jax.data.image import IMAGENET_MEAN, IMAGENET_STD
from r1v2_jax.models.config import VLMConfig

# R1V2's reference sampling for chat (the model card's temperature 0.6, top_p 0.95,
# repetition penalty 1.05); written as the checkpoint's generation defaults.
GENERATION_DEFAULTS = {"do_sample": True, "temperature": 0.6, "top_p": 0.95,
                       "repetition_penalty": 1.05}
# What InternVLProcessor looks up on the tokenizer (InternVL's -hf tokenizer_config.json).
IMAGE_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>",
                "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}
PIL_BICUBIC = 3


def preprocessor_config(config: VLMConfig) -> dict:
    """GotOcr2ImageProcessor settings equal to `generate.chat.tiling_for(config)`."""
    # InternVL without dynamic_image_size resizes to one tile
    max_tiles = config.max_dynamic_patch if config.dynamic_image_size else 1
    if not config.use_thumbnail and max_tiles > 1:  # one tile never gets a thumbnail
        raise ConversionError("config field 'use_thumbnail' = False cannot be written for "
                              "transformers' InternVL processor: it always adds the thumbnail "
                              f"to images of several tiles (max_dynamic_patch {max_tiles})")
    size = config.force_image_size
    return {
        "image_processor_type": "GotOcr2ImageProcessor", "processor_class": "InternVLProcessor",
        "size": {"height": size, "width": size}, "crop_to_patches": True,
        "min_patches": config.min_dynamic_patch, "max_patches": max_tiles,
        "do_resize": True, "resample": PIL_BICUBIC, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(IMAGENET_MEAN),
        "image_std": list(IMAGENET_STD), "do_convert_rgb": True,
    }


def processor_config(config: VLMConfig) -> dict:
    return {"processor_class": "InternVLProcessor", "image_seq_length": config.num_image_tokens}


def _token_of(tok_config: dict, field: str) -> str | None:
    value = tok_config.get(field)
    return value.get("content") if isinstance(value, dict) else value


def generation_config(config: VLMConfig, folder: Path | None) -> dict:
    """bos/eos from the model config, pad from the tokenizer files in `folder` (if any)."""
    out = {"bos_token_id": config.text.bos_token_id, "eos_token_id": config.text.eos_token_id,
           **GENERATION_DEFAULTS}
    tok_file = None if folder is None else folder / "tokenizer_config.json"
    if tok_file is not None and tok_file.is_file():
        pad = _token_of(json.loads(tok_file.read_text()), "pad_token")
        pad_id = None if pad is None else find_token_id(folder, pad)
        if pad_id is not None:
            out["pad_token_id"] = pad_id
    return out


def _add_image_tokens(tok_file: Path, config: VLMConfig) -> None:
    tok_config = json.loads(tok_file.read_text())
    extra = tok_config.get("extra_special_tokens") or {}
    if not isinstance(extra, dict):  # a list in some files: names without roles
        extra = {}
    tok_config["extra_special_tokens"] = {**extra, **IMAGE_TOKENS}
    tok_config["processor_class"] = "InternVLProcessor"
    tok_file.write_text(json.dumps(tok_config, indent=2, ensure_ascii=False))
    context_id = find_token_id(tok_file.parent, IMAGE_TOKENS["context_image_token"])
    if context_id != config.image_token_id:
        raise ConversionError(f"{tok_file.parent}: the tokenizer gives <IMG_CONTEXT> id "
                              f"{context_id}, the model config image_token_id "
                              f"{config.image_token_id}")


def write_processor_files(config: VLMConfig, tokenizer_src: str | Path | None, out: Path,
                          layout: str) -> list[str]:
    """Writes the companion files into the (new, still hidden) HF folder `out`.

    tokenizer_src: folder whose tokenizer files are copied; None or a folder without them
    writes no tokenizer (then only generation_config.json, plus the processor configs for
    layout "hf"; AutoProcessor needs a tokenizer too).
    """
    written = []
    if tokenizer_src is not None:
        written += copy_tokenizer_files(tokenizer_src, out, required=False)
    if layout == "hf":
        if "tokenizer_config.json" in written:
            _add_image_tokens(out / "tokenizer_config.json", config)
        files = {"preprocessor_config.json": preprocessor_config(config),
                 "processor_config.json": processor_config(config)}
        for name, content in files.items():
            (out / name).write_text(json.dumps(content, indent=2))
            written.append(name)
    (out / "generation_config.json").write_text(
        json.dumps(generation_config(config, out), indent=2))
    return written + ["generation_config.json"]
