"""Tiny random InternVL checkpoints in both Hugging Face layouts, built offline.

`make_tiny_hf` builds a transformers `InternVLForConditionalGeneration` (InternViT +
projector + Qwen2) with every weight randomised (norm scales, layer scales, position
embeddings and biases included, so that nothing is trivially 0 or 1) and writes it as

  layout="hf"        transformers' own `save_pretrained` (sharded, with an index);
  layout="original"  the InternVL chat remote-code layout (renamed keys, fused qkv,
                     `vision_config` + `llm_config` config.json, added_tokens.json).

The layout A rewrite is done here independently of `r1v2_jax.convert`, from the rename
table in /work/shared/spec/architecture.md, so converter tests are not circular.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

IMAGE_TOKEN_ID = 100
VOCAB_SIZE = 128
_SHARD_BYTES = 100_000  # small shards so every fixture exercises the index


def tiny_configs(*, norm_type="rms_norm", qk_norm=True, qkv_bias=False, tie=False,
                 num_kv_heads=2, image_size=28, patch_size=7):
    """(InternVLConfig) of the tiny model; tie is passed at both levels on purpose."""
    from transformers import InternVLConfig, InternVLVisionConfig, Qwen2Config

    grid = image_size // patch_size
    if image_size % patch_size or grid % 2:
        raise ValueError(f"image_size/patch_size must give an even patch grid, got {grid}")
    vision = InternVLVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=image_size, patch_size=patch_size, norm_type=norm_type, use_qk_norm=qk_norm,
        attention_bias=qkv_bias, layer_norm_eps=1e-6)
    text = Qwen2Config(
        vocab_size=VOCAB_SIZE, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=num_kv_heads, max_position_embeddings=512,
        rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2)
    return InternVLConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN_ID,
                          image_seq_length=(grid // 2) ** 2, downsample_ratio=0.5,
                          tie_word_embeddings=tie)


def _randomise(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied weights are visited once
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            leaf = name.rsplit(".", 1)[-1]
            if "norm" in name and leaf == "weight":
                value = 1.0 + 0.2 * noise
            elif leaf.startswith("lambda_"):
                value = 0.5 + 0.2 * noise
            elif leaf == "bias":
                value = 0.1 * noise
            elif leaf in ("cls_token", "position_embeddings") or "embed_tokens" in name:
                value = 0.5 * noise
            else:  # Linear / Conv weights: unit-variance activations
                value = noise / math.sqrt(p[0].numel())
            p.copy_(value.to(p.dtype))


def make_tiny_hf(tmp_path, *, norm_type="rms_norm", qk_norm=True, qkv_bias=False, tie=False,
                 num_kv_heads=2, image_size=28, patch_size=7, layout="hf", seed=0,
                 dtype=torch.float32):
    """Writes a tiny random checkpoint under `tmp_path`; returns (folder, torch model).

    The model is in eval mode, built with attn_implementation="eager", and holds exactly
    the weights written (in `dtype`).
    """
    from transformers import InternVLForConditionalGeneration

    if layout not in ("hf", "original"):
        raise ValueError(f"layout must be 'hf' or 'original', got {layout!r}")
    config = tiny_configs(norm_type=norm_type, qk_norm=qk_norm, qkv_bias=qkv_bias, tie=tie,
                          num_kv_heads=num_kv_heads, image_size=image_size, patch_size=patch_size)
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration._from_config(config, attn_implementation="eager")
    _randomise(model, seed)
    model = model.to(dtype).eval()
    n = 0
    while (Path(tmp_path) / f"tiny-{layout}-{n}").exists():
        n += 1
    folder = Path(tmp_path) / f"tiny-{layout}-{n}"
    if layout == "hf":
        model.save_pretrained(folder, max_shard_size=_SHARD_BYTES)
    else:
        _save_original(model, folder, tie)
    return folder, model


def _original_name(name: str) -> str:
    """In-memory transformers name -> InternVL chat remote-code name."""
    renames = [
        ("model.vision_tower.embeddings.cls_token", "vision_model.embeddings.class_embedding"),
        ("model.vision_tower.embeddings.position_embeddings",
         "vision_model.embeddings.position_embedding"),
        ("model.vision_tower.embeddings.patch_embeddings.projection.",
         "vision_model.embeddings.patch_embedding."),
        ("model.vision_tower.encoder.layer.", "vision_model.encoder.layers."),
        ("model.multi_modal_projector.layer_norm.", "mlp1.0."),
        ("model.multi_modal_projector.linear_1.", "mlp1.1."),
        ("model.multi_modal_projector.linear_2.", "mlp1.3."),
        ("model.language_model.", "language_model.model."),
        ("lm_head.", "language_model.lm_head."),
    ]
    for old, new in renames:
        if name.startswith(old):
            name = new + name[len(old):]
            break
    for old, new in ((".attention.projection_layer.", ".attn.proj."), (".attention.", ".attn."),
                     (".layernorm_before.", ".norm1."), (".layernorm_after.", ".norm2."),
                     (".lambda_1", ".ls1"), (".lambda_2", ".ls2")):
        if name.startswith("vision_model."):
            name = name.replace(old, new)
    return name


def _save_original(model, folder: Path, tie: bool) -> None:
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if tie:
        state.pop("lm_head.weight")
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in state.items():
        new = _original_name(name)
        for n in "qkv":
            marker = f".attn.{n}_proj."
            if marker in new:
                fused.setdefault(new.replace(marker, ".attn.qkv."), {})[n] = tensor
                break
        else:
            out[new] = tensor
    for name, parts in fused.items():  # rows [q; k; v]
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    folder.mkdir(parents=True)
    shards, current, size = [], {}, 0
    for name in sorted(out):
        if current and size + out[name].nbytes > _SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        current[name] = out[name]
        size += out[name].nbytes
    shards.append(current)
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, folder / file, metadata={"format": "pt"})
        weight_map.update({name: file for name in shard})
    total = sum(t.nbytes for t in out.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    (folder / "config.json").write_text(json.dumps(_original_config(model.config, dtype),
                                                   indent=2))
    (folder / "added_tokens.json").write_text(json.dumps(
        {"<img>": IMAGE_TOKEN_ID - 2, "</img>": IMAGE_TOKEN_ID - 1,
         "<IMG_CONTEXT>": IMAGE_TOKEN_ID}))


def _original_config(config, dtype: str) -> dict:
    v, t = config.vision_config, config.text_config
    return {
        "architectures": ["InternVLChatModel"], "model_type": "internvl_chat",
        "torch_dtype": dtype, "downsample_ratio": config.downsample_ratio,
        "dynamic_image_size": True, "force_image_size": v.image_size[0],
        "max_dynamic_patch": 12, "min_dynamic_patch": 1, "ps_version": "v2", "select_layer": -1,
        "template": "skywork-r1v-chat", "use_thumbnail": True, "use_backbone_lora": 0,
        "use_llm_lora": 0, "tie_word_embeddings": config.tie_word_embeddings,
        "vision_config": {
            "architectures": ["InternVisionModel"], "model_type": "intern_vit_6b",
            "hidden_act": "gelu", "hidden_size": v.hidden_size,
            "num_hidden_layers": v.num_hidden_layers,
            "num_attention_heads": v.num_attention_heads,
            "intermediate_size": v.intermediate_size, "image_size": v.image_size[0],
            "patch_size": v.patch_size[0], "num_channels": v.num_channels,
            "qkv_bias": v.attention_bias, "qk_normalization": v.use_qk_norm,
            "norm_type": v.norm_type, "layer_norm_eps": v.layer_norm_eps,
            "drop_path_rate": 0.0, "initializer_factor": 0.1, "torch_dtype": dtype},
        "llm_config": {
            "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
            "vocab_size": t.vocab_size, "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size, "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "num_key_value_heads": t.num_key_value_heads,
            "max_position_embeddings": t.max_position_embeddings, "rms_norm_eps": t.rms_norm_eps,
            "rope_theta": t.rope_parameters["rope_theta"], "rope_scaling": None,
            "use_sliding_window": False, "sliding_window": t.max_position_embeddings,
            "tie_word_embeddings": t.tie_word_embeddings, "bos_token_id": t.bos_token_id,
            "eos_token_id": t.eos_token_id, "torch_dtype": dtype},
    }
