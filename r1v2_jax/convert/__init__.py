"""Checkpoint converters: Hugging Face (InternVL chat "original" layout A, transformers
"hf" layout B) <-> the JAX parameter tree of docs/PARAMS.md, in memory and on disk (orbax).

  load_hf_config(path) -> VLMConfig               config.json (+ tokenizer files) only
  load_hf(path, dtype=None) -> (config, params)   numpy tree, everything validated first
  save_hf(config, params, path, layout)           sharded safetensors + index + config.json
  convert_to_jax(src, dst, dtype="bfloat16")      streaming HF -> orbax checkpoint folder
  convert_to_hf(src, dst, layout)                 orbax checkpoint folder -> HF, streaming
  save_jax_checkpoint / load_jax_checkpoint       orbax params/ + model_config.json
"""

from r1v2_jax.convert.errors import ConversionError
from r1v2_jax.convert.hf_config import load_hf_config
from r1v2_jax.convert.hf_load import load_hf, open_hf_checkpoint
from r1v2_jax.convert.hf_save import convert_to_hf, save_hf
from r1v2_jax.convert.orbax_io import load_jax_checkpoint, save_jax_checkpoint
from r1v2_jax.convert.streaming import convert_to_jax

__all__ = ["ConversionError", "load_hf_config", "load_hf", "open_hf_checkpoint", "save_hf",
           "convert_to_hf", "convert_to_jax", "save_jax_checkpoint", "load_jax_checkpoint"]
