"""config.json of either Hugging Face layout -> `VLMConfig`, refusing what we cannot honour.

Layout A ("original", model_type internvl_chat / skywork_chat): top-level `vision_config`
(InternViT) + `llm_config` (Qwen2ForCausalLM) + InternVL chat fields. The LM is built
as `Qwen2ForCausalLM(llm_config)`, so `llm_config.tie_word_embeddings` (Qwen2 default
False) decides tying; the top-level flag is never consulted by that code.
Layout B ("hf", model_type internvl): `vision_config` + `text_config`; transformers ties
lm_head to the embeddings from the top-level `tie_word_embeddings` (default True).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from r1v2_jax.convert.errors import ConversionError
from r1v2_jax.convert.tokenizer_ids import find_token_id
from r1v2_jax.models.config import TextConfig, VisionConfig, VLMConfig

LAYOUT_A_TYPES = {"internvl_chat": "InternVLChatModel", "skywork_chat": "SkyworkChatModel"}
LAYOUT_B_TYPE = "internvl"
IMG_CONTEXT_TOKEN = "<IMG_CONTEXT>"
_MISSING = object()


def read_config_json(path: str | Path) -> dict[str, Any]:
    file = Path(path) / "config.json"
    try:
        raw = json.loads(file.read_text())
    except FileNotFoundError:
        raise ConversionError(f"{file}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConversionError(f"{file}: invalid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise ConversionError(f"{file}: expected a JSON object, got a {type(raw).__name__}")
    return raw


def detect_layout(raw: dict[str, Any], where: str = "config.json") -> str:
    model_type = raw.get("model_type")
    if model_type in LAYOUT_A_TYPES:
        layout = "original"
        allowed = set(LAYOUT_A_TYPES.values())
    elif model_type == LAYOUT_B_TYPE:
        layout, allowed = "hf", {"InternVLForConditionalGeneration"}
    else:
        raise ConversionError(
            f"{where}: unsupported model_type {model_type!r} (field 'model_type'); expected one "
            f"of {sorted(LAYOUT_A_TYPES) + [LAYOUT_B_TYPE]}")
    archs = raw.get("architectures") or []
    unknown = [a for a in archs if a not in allowed]
    if unknown or len(archs) > 1:
        raise ConversionError(f"{where}: unsupported architectures {archs} (field "
                              f"'architectures'); expected one of {sorted(allowed)}")
    return layout


def load_hf_config(path: str | Path) -> VLMConfig:
    """The `VLMConfig` of the checkpoint folder `path` (reads config.json, and for layout A
    the tokenizer files for the `<IMG_CONTEXT>` id)."""
    return read_hf_config(path)[0]


def read_hf_config(path: str | Path) -> tuple[VLMConfig, str]:
    """(`VLMConfig`, layout) of the checkpoint folder `path`."""
    raw = read_config_json(path)
    where = str(Path(path) / "config.json")
    layout = detect_layout(raw, where)
    fields = _Fields(raw, where)
    if layout == "original":
        return _layout_a(fields, Path(path)), layout
    return _layout_b(fields), layout


class _Fields:
    """Typed access to one (nested) config dict; errors name the dotted field and file."""

    def __init__(self, raw: dict[str, Any], where: str, prefix: str = ""):
        self.raw, self.where, self.prefix = raw, where, prefix

    def sub(self, key: str) -> "_Fields":
        value = self.get(key, dict)
        return _Fields(value, self.where, f"{self.prefix}{key}.")

    def fail(self, key: str, message: str) -> ConversionError:
        return ConversionError(f"{self.where}: field '{self.prefix}{key}' {message}")

    def get(self, key: str, kind: type | tuple = object, default: Any = _MISSING) -> Any:
        if key not in self.raw or (self.raw[key] is None and default is not _MISSING):
            if default is _MISSING:
                raise self.fail(key, "is required")
            return default
        value = self.raw[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        bad_bool = isinstance(value, bool) and kind in (int, float)
        if bad_bool or not isinstance(value, kind):
            raise self.fail(key, f"has value {value!r}; expected {getattr(kind, '__name__', kind)}")
        return value

    def size(self, key: str, default: Any = _MISSING) -> int:
        """A positive int (a count or a dimension: 0 would divide by zero later)."""
        value = self.get(key, int, default)
        if value < 1:
            raise self.fail(key, f"is {value}; expected a positive integer")
        return value

    def expect(self, key: str, allowed: tuple, default: Any = _MISSING, why: str = "") -> Any:
        value = self.get(key, object, default)
        if value not in allowed:
            raise self.fail(key, f"is {value!r}, which is not supported (supported: "
                                 f"{list(allowed)}){': ' + why if why else ''}")
        return value

    def square(self, key: str) -> int:
        value = self.get(key, (int, list))
        if isinstance(value, list):
            square = len(value) == 2 and value[0] == value[1]
            if not square or not all(isinstance(v, int) for v in value):
                raise self.fail(key, f"is {value}; only square sizes are supported")
            value = value[0]
        if isinstance(value, bool) or value < 1:
            raise self.fail(key, f"is {value}; expected a positive integer")
        return value


def _text(f: _Fields, tie: bool) -> TextConfig:
    f.expect("model_type", ("qwen2",))
    f.expect("hidden_act", ("silu",), "silu")
    f.expect("use_sliding_window", (False,), False, "sliding-window attention is not modelled")
    if f.get("rope_scaling", dict, None) is not None:
        raise f.fail("rope_scaling", "is set; only plain RoPE is supported")
    rope_theta = f.get("rope_theta", float, 10000.0)  # transformers 4.x spelling and default
    if f.get("rope_parameters", dict, None) is not None:
        rope = f.sub("rope_parameters")
        rope.expect("rope_type", ("default",), "default", "only plain RoPE is supported")
        extra = sorted(set(rope.raw) - {"rope_type", "rope_theta"})
        if extra:
            raise rope.fail(extra[0], "is set; only plain RoPE (rope_type, rope_theta) is "
                                      "supported")
        rope_theta = rope.get("rope_theta", float)
    layer_types = f.get("layer_types", list, None)
    if layer_types is not None and any(t != "full_attention" for t in layer_types):
        raise f.fail("layer_types", "contains non-full attention layers, which are not modelled")
    heads = f.size("num_attention_heads")
    hidden = f.size("hidden_size")
    defaults = TextConfig()
    return TextConfig(
        vocab_size=f.size("vocab_size"), hidden_size=hidden,
        intermediate_size=f.size("intermediate_size"),
        num_hidden_layers=f.size("num_hidden_layers"), num_attention_heads=heads,
        num_key_value_heads=f.size("num_key_value_heads", heads),
        head_dim=f.size("head_dim", hidden // heads),
        rms_norm_eps=f.get("rms_norm_eps", float),
        rope_theta=rope_theta,
        max_position_embeddings=f.size("max_position_embeddings"),
        tie_word_embeddings=tie,
        bos_token_id=f.get("bos_token_id", int, defaults.bos_token_id),
        eos_token_id=_single_id(f, "eos_token_id", defaults.eos_token_id))


def _single_id(f: _Fields, key: str, default: int) -> int:
    value = f.get(key, (int, list), default)
    if isinstance(value, list):
        if len(value) != 1 or not isinstance(value[0], int):
            raise f.fail(key, f"is {value}; TextConfig holds a single id")
        value = value[0]
    return value


def _vision(f: _Fields, *, layout_b: bool) -> VisionConfig:
    f.expect("hidden_act", ("gelu",), "gelu", "InternViT uses exact GELU")
    norm_type = f.expect("norm_type", ("rms_norm", "layer_norm"))
    eps = f.get("layer_norm_eps", float)
    if layout_b:
        f.expect("model_type", ("internvl_vision",))
        f.expect("use_mean_pooling", (True,), True, "False adds a final norm we do not model")
        f.expect("use_absolute_position_embeddings", (True,), True)
        f.expect("use_mask_token", (False,), False, "the mask token is not modelled")
        qkv_bias, qk_norm = f.get("attention_bias", bool, False), f.get("use_qk_norm", bool, False)
        qk_eps = 1e-6  # fixed in transformers' InternVLVisionAttention
    else:
        qkv_bias, qk_norm = f.get("qkv_bias", bool), f.get("qk_normalization", bool)
        qk_eps = eps  # InternAttention builds q/k norms with layer_norm_eps
    cfg = VisionConfig(
        hidden_size=f.size("hidden_size"), num_hidden_layers=f.size("num_hidden_layers"),
        num_attention_heads=f.size("num_attention_heads"),
        intermediate_size=f.size("intermediate_size"),
        image_size=f.square("image_size"), patch_size=f.square("patch_size"),
        num_channels=f.size("num_channels", 3), qkv_bias=qkv_bias, qk_normalization=qk_norm,
        norm_type=norm_type, layer_norm_eps=eps, qk_norm_eps=qk_eps)
    if cfg.hidden_size % cfg.num_attention_heads:
        raise f.fail("num_attention_heads", "does not divide hidden_size")
    if cfg.image_size % cfg.patch_size:
        raise f.fail("patch_size", f"does not divide image_size {cfg.image_size}")
    return cfg


def _check_ratio(f: _Fields, vision: VisionConfig) -> float:
    ratio = f.get("downsample_ratio", float, 0.5)
    inv = round(1 / ratio) if ratio > 0 else 0
    if inv < 1 or abs(1 / inv - ratio) > 1e-9 or vision.num_patches_per_side % inv:
        raise f.fail("downsample_ratio", f"is {ratio}; 1/ratio must be an integer dividing the "
                                         f"{vision.num_patches_per_side} patches per side")
    return ratio


def _check_ids(f: _Fields, cfg: VLMConfig, layer_key: str, image_key: str) -> VLMConfig:
    n = cfg.vision.num_hidden_layers
    active = n + 1 + cfg.select_layer if cfg.select_layer < 0 else cfg.select_layer
    if not 0 < active <= n:
        raise f.fail(layer_key, f"is {cfg.select_layer}, out of range for {n} vision layers")
    if not 0 <= cfg.image_token_id < cfg.text.vocab_size:
        raise f.fail(image_key, f"gives image token id {cfg.image_token_id}, outside the "
                                f"vocabulary of {cfg.text.vocab_size}")
    return cfg


def _layout_a(f: _Fields, folder: Path) -> VLMConfig:
    llm = f.sub("llm_config")
    archs = llm.get("architectures", list)
    if archs != ["Qwen2ForCausalLM"]:
        raise llm.fail("architectures", f"is {archs}; only ['Qwen2ForCausalLM'] is supported")
    vis = f.sub("vision_config")
    archs = vis.get("architectures", list, ["InternVisionModel"])
    if archs != ["InternVisionModel"]:
        raise vis.fail("architectures", f"is {archs}; only ['InternVisionModel'] is supported")
    for key in ("use_backbone_lora", "use_llm_lora"):
        f.expect(key, (0, False), 0, "merge LoRA weights before converting")
    f.expect("pad2square", (False,), False, "only dynamic tiling preprocessing is modelled")
    vision = _vision(vis, layout_b=False)
    text = _text(llm, tie=llm.get("tie_word_embeddings", bool, False))
    token = find_token_id(folder, IMG_CONTEXT_TOKEN)
    written = f.get("img_context_token_id", int, None)  # only our own exports carry it
    if token is not None and written is not None and token != written:
        raise f.fail("img_context_token_id", f"is {written} but the tokenizer files give "
                                             f"{IMG_CONTEXT_TOKEN} the id {token}")
    token = written if token is None else token
    defaults = VLMConfig()
    cfg = VLMConfig(
        vision=vision, text=text, downsample_ratio=_check_ratio(f, vision),
        ps_version=f.expect("ps_version", ("v1", "v2"), "v1"),  # InternVLChatConfig default
        select_layer=f.get("select_layer", int, -1),
        image_token_id=defaults.image_token_id if token is None else token,
        force_image_size=f.get("force_image_size", int, vision.image_size),
        dynamic_image_size=f.get("dynamic_image_size", bool, False),
        use_thumbnail=f.get("use_thumbnail", bool, False),
        min_dynamic_patch=f.get("min_dynamic_patch", int, 1),
        max_dynamic_patch=f.get("max_dynamic_patch", int, 6),
        template=f.get("template", str, defaults.template))
    return _check_ids(f, cfg, "select_layer", "img_context_token_id (or <IMG_CONTEXT> in the "
                                              "tokenizer files, or the default 151667)")


def _layout_b(f: _Fields) -> VLMConfig:
    f.expect("vision_feature_select_strategy", ("default",), "default",
             "'full' keeps the CLS token, which the adapter does not expect")
    f.expect("projector_hidden_act", ("gelu",), "gelu")
    vision = _vision(f.sub("vision_config"), layout_b=True)
    text = _text(f.sub("text_config"), tie=f.get("tie_word_embeddings", bool, True))
    cfg = VLMConfig(vision=vision, text=text, downsample_ratio=_check_ratio(f, vision),
                    ps_version="v2",  # transformers' pixel_shuffle is InternVL's "v2"
                    select_layer=f.get("vision_feature_layer", int, -1),
                    image_token_id=f.get("image_token_id", int, 151667),
                    force_image_size=vision.image_size)
    seq = f.get("image_seq_length", int, cfg.num_image_tokens)
    if seq != cfg.num_image_tokens:
        raise f.fail("image_seq_length", f"is {seq} but the vision config gives "
                                         f"{cfg.num_image_tokens} tokens per tile")
    return _check_ids(f, cfg, "vision_feature_layer", "image_token_id")
