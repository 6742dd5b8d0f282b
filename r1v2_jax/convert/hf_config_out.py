"""`VLMConfig` -> config.json of either Hugging Face layout (inverse of hf_config.py).

Refuses configs a layout cannot express rather than writing a model that computes
something else (e.g. ps_version "v1" in transformers' InternVL, which is always "v2").
"""

from __future__ import annotations

from typing import Any

from r1v2_jax.convert.errors import ConversionError
from r1v2_jax.models.config import VLMConfig

_PROJECTOR_EPS = 1e-5  # nn.LayerNorm default in both reference implementations
_HF_QK_NORM_EPS = 1e-6  # fixed in transformers' InternVLVisionAttention


def _refuse(field: str, value: Any, layout: str, why: str) -> ConversionError:
    return ConversionError(f"config field '{field}' = {value!r} cannot be written in layout "
                           f"{layout!r}: {why}")


def check_writable(config: VLMConfig, layout: str) -> None:
    vc = config.vision
    if config.projector_layer_norm_eps != _PROJECTOR_EPS:
        raise _refuse("projector_layer_norm_eps", config.projector_layer_norm_eps, layout,
                      f"both implementations fix it at {_PROJECTOR_EPS}")
    if layout == "hf":
        if config.ps_version != "v2":
            raise _refuse("ps_version", config.ps_version, layout, "transformers implements v2")
        if vc.qk_normalization and vc.qk_norm_eps != _HF_QK_NORM_EPS:
            raise _refuse("vision.qk_norm_eps", vc.qk_norm_eps, layout,
                          f"transformers fixes it at {_HF_QK_NORM_EPS}")
    elif vc.qk_normalization and vc.qk_norm_eps != vc.layer_norm_eps:
        raise _refuse("vision.qk_norm_eps", vc.qk_norm_eps, layout,
                      f"the InternVL code uses vision.layer_norm_eps ({vc.layer_norm_eps})")


def _text_fields(config: VLMConfig) -> dict[str, Any]:
    tc = config.text
    out = {
        "model_type": "qwen2", "hidden_act": "silu", "vocab_size": tc.vocab_size,
        "hidden_size": tc.hidden_size, "intermediate_size": tc.intermediate_size,
        "num_hidden_layers": tc.num_hidden_layers, "num_attention_heads": tc.num_attention_heads,
        "num_key_value_heads": tc.num_key_value_heads,
        "max_position_embeddings": tc.max_position_embeddings, "rms_norm_eps": tc.rms_norm_eps,
        "use_sliding_window": False, "tie_word_embeddings": tc.tie_word_embeddings,
        "bos_token_id": tc.bos_token_id, "eos_token_id": tc.eos_token_id,
        "attention_dropout": 0.0,
    }
    if tc.head_dim != tc.hidden_size // tc.num_attention_heads:
        out["head_dim"] = tc.head_dim  # Qwen2Attention reads it when present
    return out


def hf_config_dict(config: VLMConfig, layout: str, dtype_name: str) -> dict[str, Any]:
    """The config.json content for `config` in `layout` ("hf" or "original")."""
    check_writable(config, layout)
    vc = config.vision
    if layout == "hf":
        return {
            "architectures": ["InternVLForConditionalGeneration"], "model_type": "internvl",
            "dtype": dtype_name, "downsample_ratio": config.downsample_ratio,
            "image_token_id": config.image_token_id,
            "image_seq_length": config.num_image_tokens, "projector_hidden_act": "gelu",
            "vision_feature_layer": config.select_layer,
            "vision_feature_select_strategy": "default",
            "tie_word_embeddings": config.text.tie_word_embeddings,
            "vision_config": {
                "model_type": "internvl_vision", "hidden_act": "gelu",
                "hidden_size": vc.hidden_size, "num_hidden_layers": vc.num_hidden_layers,
                "num_attention_heads": vc.num_attention_heads,
                "intermediate_size": vc.intermediate_size,
                "image_size": [vc.image_size] * 2, "patch_size": [vc.patch_size] * 2,
                "num_channels": vc.num_channels, "attention_bias": vc.qkv_bias,
                "use_qk_norm": vc.qk_normalization, "norm_type": vc.norm_type,
                "layer_norm_eps": vc.layer_norm_eps, "use_mean_pooling": True,
                "use_absolute_position_embeddings": True, "use_mask_token": False},
            "text_config": {**_text_fields(config), "rope_parameters": {
                "rope_type": "default", "rope_theta": config.text.rope_theta}},
        }
    if layout != "original":
        raise ValueError(f"layout must be 'hf' or 'original', got {layout!r}")
    return {
        "architectures": ["InternVLChatModel"], "model_type": "internvl_chat",
        "torch_dtype": dtype_name, "downsample_ratio": config.downsample_ratio,
        "dynamic_image_size": config.dynamic_image_size,
        "force_image_size": config.force_image_size,
        "min_dynamic_patch": config.min_dynamic_patch,
        "max_dynamic_patch": config.max_dynamic_patch, "ps_version": config.ps_version,
        "select_layer": config.select_layer, "template": config.template,
        "use_thumbnail": config.use_thumbnail, "use_backbone_lora": 0, "use_llm_lora": 0,
        "pad2square": False, "tie_word_embeddings": config.text.tie_word_embeddings,
        # Not read by the remote code (it asks the tokenizer); hf_config.py falls back to it
        # when no tokenizer file names <IMG_CONTEXT>.
        "img_context_token_id": config.image_token_id,
        "vision_config": {
            "architectures": ["InternVisionModel"], "model_type": "intern_vit_6b",
            "hidden_act": "gelu", "hidden_size": vc.hidden_size,
            "num_hidden_layers": vc.num_hidden_layers,
            "num_attention_heads": vc.num_attention_heads,
            "intermediate_size": vc.intermediate_size, "image_size": vc.image_size,
            "patch_size": vc.patch_size, "num_channels": vc.num_channels,
            "qkv_bias": vc.qkv_bias, "qk_normalization": vc.qk_normalization,
            "norm_type": vc.norm_type, "layer_norm_eps": vc.layer_norm_eps,
            "drop_path_rate": 0.0, "torch_dtype": dtype_name},
        "llm_config": {**_text_fields(config), "architectures": ["Qwen2ForCausalLM"],
                       "rope_theta": config.text.rope_theta, "rope_scaling": None,
                       "torch_dtype": dtype_name},
    }
