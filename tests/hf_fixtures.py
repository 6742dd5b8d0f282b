"""Tiny random InternVL checkpoints in both Hugging Face layouts, built offline.

`make_tiny_hf` builds a transformers `InternVLForConditionalGeneration` (InternViT +
projector + Qwen2) with every weight randomised (norm scales, layer scales, position
embeddings and biases included, so that nothing is trivially 0 or 1) and writes it as

  layout="hf"        transformers' own `save_pretrained` (sharded, with an index);
  layout="original"  the InternVL chat remote-code layout (renamed keys, fused qkv,
                     `vision_config` + `llm_config` config.json, added_tokens.json).

The layout A rewrite is done here independently of `r1v2_jax.convert`, from the rename
table of the released InternVL chat layout (written out below, independently of
r1v2_jax.convert), so converter tests are not circular.
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
        # non-default eps and theta (R1V2: 1e6; HF and a hard-coded RoPE: 1e4), so that an
        # ignored field changes the logits beyond the parity tolerance
        rms_norm_eps=1e-3, rope_parameters={"rope_type": "default", "rope_theta": 5e5},
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


# ----------------------------------------------------------------------------- tokenizer
# The QwQ-32B ChatML template (its tool-calling branch left out): an optional first system
# turn, earlier assistant turns stripped of their reasoning, and a generation prompt that
# opens the reasoning with `<think>\n`, R1V2's prompt format (docs/data.md).
QWQ_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{%- set content = message.content %}"
    "{%- if not loop.last %}"
    "{%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' }}"
    "{%- endif %}")

# Added tokens at fixed ids inside VOCAB_SIZE: eos/bos as in tiny_configs (eos_token_id=2
# is <|im_end|>, bos_token_id=1 is <|endoftext|> as in Qwen2), <IMG_CONTEXT> = IMAGE_TOKEN_ID
# with <img>/</img> just before it (as in layout A's added_tokens.json above).
QWEN2_ADDED_TOKENS = {"<|endoftext|>": 1, "<|im_end|>": 2, "<|im_start|>": 3,
                      "<img>": IMAGE_TOKEN_ID - 2, "</img>": IMAGE_TOKEN_ID - 1,
                      "<IMG_CONTEXT>": IMAGE_TOKEN_ID, "<think>": IMAGE_TOKEN_ID + 1,
                      "</think>": IMAGE_TOKEN_ID + 2}
QWEN2_SPECIAL = ("<|endoftext|>", "<|im_end|>", "<|im_start|>", "<img>", "</img>",
                 "<IMG_CONTEXT>")  # <think>/</think> are ordinary added tokens in Qwen
_MERGE_CORPUS = ["system", "user", "assistant", "How many red circles are there?",
                 "The answer is \\boxed{3}.", "I see the shapes.", "Be brief and count them."]


def _qwen2_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE vocab of exactly VOCAB_SIZE ids: the added tokens at their ids, the
    byte characters of printable ASCII and newline ('`' left out for room) on the free ids
    below <img>, then merges learned on a few sentences on the ids above </think>."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_char = bytes_to_unicode()
    alphabet = [byte_char[b] for b in [10, *range(32, 127)] if b != ord("`")]
    low_ids = [i for i in range(IMAGE_TOKEN_ID - 2) if i not in QWEN2_ADDED_TOKENS.values()]
    high_ids = list(range(max(QWEN2_ADDED_TOKENS.values()) + 1, VOCAB_SIZE))
    assert len(alphabet) == len(low_ids), (len(alphabet), len(low_ids))
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + len(high_ids),
                                  initial_alphabet=alphabet, show_progress=False)
    trainer_tok.train_from_iterator(_MERGE_CORPUS * 4, trainer)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
              for m in json.loads(trainer_tok.to_str())["model"]["merges"]][:len(high_ids)]
    vocab = dict(QWEN2_ADDED_TOKENS)
    vocab.update(zip(alphabet, low_ids))
    vocab.update(zip(("".join(m) for m in merges), high_ids))
    assert sorted(vocab.values()) == list(range(VOCAB_SIZE))
    return vocab, merges


def make_qwen2_tokenizer(path) -> Path:
    """Writes a tiny Qwen2-style tokenizer folder (tokenizer.json, tokenizer_config.json with
    the QwQ chat template, added_tokens.json, special_tokens_map.json) offline; returns it.

    transformers' own Qwen2Tokenizer (Qwen2's pre-tokenizer regex, byte-level BPE, NFC)
    built on `_qwen2_vocab_and_merges`; ids fit the tiny model (VOCAB_SIZE ids). Text
    outside printable ASCII + newline has no tokens here.
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    path = Path(path)
    vocab, merges = _qwen2_vocab_and_merges()
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None,
                         eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         model_max_length=512, clean_up_tokenization_spaces=False)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN2_SPECIAL],
                   special_tokens=True)
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t in ("<think>", "</think>")])
    assert len(tok) == VOCAB_SIZE and all(tok.convert_tokens_to_ids(t) == i
                                          for t, i in QWEN2_ADDED_TOKENS.items())
    tok.save_pretrained(path)
    # The released files keep the template inside tokenizer_config.json.
    (path / "chat_template.jinja").unlink(missing_ok=True)
    config_file = path / "tokenizer_config.json"
    tok_config = json.loads(config_file.read_text())
    tok_config["chat_template"] = QWQ_CHAT_TEMPLATE
    config_file.write_text(json.dumps(tok_config, indent=2))
    (path / "added_tokens.json").write_text(json.dumps(
        {t: i for t, i in QWEN2_ADDED_TOKENS.items() if i >= IMAGE_TOKEN_ID - 2}, indent=2))
    return path


def make_tiny_release(path, seed=0) -> Path:
    """A complete tiny checkpoint folder `path` (must not exist) in the released layout A:
    config.json, safetensors shards + index, and the Qwen2-style tokenizer files."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    folder, _ = make_tiny_hf(path.parent, layout="original", seed=seed)
    folder.rename(path)
    make_qwen2_tokenizer(path)
    return path
