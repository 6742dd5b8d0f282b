"""config.json of both layouts -> VLMConfig: the 38B sizes, tying rules, token ids, refusals."""

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from r1v2_jax.convert import ConversionError, load_hf_config
from r1v2_jax.convert.hf_config_out import hf_config_dict
from r1v2_jax.convert.mapping import leaf_shapes, rules_for
from r1v2_jax.models.config import TextConfig, VisionConfig

# Copies of the spec's reconstructed 38B config and key list (the repo reads nothing outside it).
SPEC = Path(__file__).resolve().parents[1] / "fixtures"
SPEC_CONFIG = json.loads((SPEC / "r1v2_38b_config.json").read_text())


def _write(folder: Path, config: dict, **files) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    for name, content in files.items():
        (folder / name.replace("__", ".")).write_text(json.dumps(content))
    return folder


def test_38b_config_has_the_spec_sizes(tmp_path):
    cfg = load_hf_config(_write(tmp_path, SPEC_CONFIG))
    assert cfg.vision == VisionConfig(
        hidden_size=3200, num_hidden_layers=45, num_attention_heads=25, intermediate_size=12800,
        image_size=448, patch_size=14, num_channels=3, qkv_bias=False, qk_normalization=True,
        norm_type="rms_norm", layer_norm_eps=1e-6, qk_norm_eps=1e-6)
    assert cfg.vision.head_dim == 128
    assert cfg.text == TextConfig(
        vocab_size=152064, hidden_size=5120, intermediate_size=27648, num_hidden_layers=64,
        num_attention_heads=40, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5,
        rope_theta=1e6, max_position_embeddings=40960, tie_word_embeddings=False,
        bos_token_id=151643, eos_token_id=151645)
    assert (cfg.downsample_ratio, cfg.ps_version, cfg.select_layer) == (0.5, "v2", -1)
    assert (cfg.num_image_tokens, cfg.image_token_id) == (256, 151667)
    assert (cfg.force_image_size, cfg.dynamic_image_size, cfg.use_thumbnail) == (448, True, True)
    assert (cfg.min_dynamic_patch, cfg.max_dynamic_patch) == (1, 12)
    assert cfg.template == "skywork-r1v-chat"
    counts = {}
    for leaf, shape in leaf_shapes(cfg).items():
        counts[leaf[0]] = counts.get(leaf[0], 0) + int(np.prod(shape))
    assert round(counts["vision"] / 1e9, 3) == 5.536
    assert round(counts["adapter"] / 1e9, 3) == 0.092
    assert round(counts["text"] / 1e9, 3) == 32.764


def test_38b_layout_a_keys_match_the_spec_key_list(tmp_path):
    cfg = load_hf_config(_write(tmp_path, SPEC_CONFIG))
    expected = {}
    for line in (SPEC / "r1v2_38b_keys.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split("\t")[:2]
        expected[key.replace("{N}", "{i}")] = tuple(json.loads(shape))
    assert {r.hf_key: r.hf_shape for r in rules_for(cfg, "original")} == expected


def test_layout_a_ties_from_llm_config_only(tmp_path):
    raw = copy.deepcopy(SPEC_CONFIG)
    raw["tie_word_embeddings"] = True  # the remote code never reads the top-level flag
    assert not load_hf_config(_write(tmp_path / "a", raw)).text.tie_word_embeddings
    raw["llm_config"]["tie_word_embeddings"] = True
    raw["tie_word_embeddings"] = False
    assert load_hf_config(_write(tmp_path / "b", raw)).text.tie_word_embeddings
    del raw["llm_config"]["tie_word_embeddings"]  # Qwen2Config default
    assert not load_hf_config(_write(tmp_path / "c", raw)).text.tie_word_embeddings


def _layout_b(cfg, tie=None):
    raw = hf_config_dict(cfg, "hf", "bfloat16")
    if tie is None:
        del raw["tie_word_embeddings"]
    else:
        raw["tie_word_embeddings"] = tie
    raw["text_config"]["tie_word_embeddings"] = False  # transformers ignores it for tying
    return raw


def test_layout_b_ties_from_top_level_default_true(tmp_path):
    cfg = load_hf_config(_write(tmp_path / "spec", SPEC_CONFIG))
    assert load_hf_config(_write(tmp_path / "a", _layout_b(cfg))).text.tie_word_embeddings
    assert load_hf_config(_write(tmp_path / "b", _layout_b(cfg, True))).text.tie_word_embeddings
    untied = load_hf_config(_write(tmp_path / "c", _layout_b(cfg, False)))
    assert not untied.text.tie_word_embeddings


def test_both_layouts_written_by_us_read_back_identically(tmp_path):
    cfg = load_hf_config(_write(tmp_path / "spec", SPEC_CONFIG))
    for layout in ("hf", "original"):
        back = load_hf_config(_write(tmp_path / layout, hf_config_dict(cfg, layout, "bfloat16")))
        if layout == "hf":  # transformers' config has no preprocessing fields
            back = back.replace(dynamic_image_size=cfg.dynamic_image_size,
                                use_thumbnail=cfg.use_thumbnail,
                                max_dynamic_patch=cfg.max_dynamic_patch, template=cfg.template)
        assert back == cfg, layout


def test_image_token_id_from_tokenizer_files(tmp_path):
    from tokenizers import Tokenizer, models

    raw = copy.deepcopy(SPEC_CONFIG)
    assert load_hf_config(_write(tmp_path / "none", raw)).image_token_id == 151667  # default
    folder = _write(tmp_path / "added", raw, added_tokens__json={"<IMG_CONTEXT>": 151671})
    assert load_hf_config(folder).image_token_id == 151671
    folder = _write(tmp_path / "cfg", raw, tokenizer_config__json={
        "added_tokens_decoder": {"151670": {"content": "<IMG_CONTEXT>", "special": True}}})
    assert load_hf_config(folder).image_token_id == 151670
    fast = Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>"))
    fast.add_special_tokens(["<img>", "</img>", "<IMG_CONTEXT>"])  # ids 2, 3, 4
    folder = _write(tmp_path / "fast", raw)
    fast.save(str(folder / "tokenizer.json"))
    assert load_hf_config(folder).image_token_id == 4
    (folder / "added_tokens.json").write_text(json.dumps({"<IMG_CONTEXT>": 7}))
    with pytest.raises(ConversionError, match="disagree on the id of <IMG_CONTEXT>"):
        load_hf_config(folder)


def _set(raw, dotted, value):
    *parents, last = dotted.split(".")
    node = raw
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value


A_REFUSALS = [
    ("model_type", "llava", "'model_type'"),
    ("architectures", ["LlavaForConditionalGeneration"], "'architectures'"),
    ("llm_config.architectures", ["LlamaForCausalLM"], "'llm_config.architectures'"),
    ("llm_config.hidden_act", "gelu", "'llm_config.hidden_act'"),
    ("llm_config.rope_scaling", {"type": "dynamic", "factor": 2.0}, "'llm_config.rope_scaling'"),
    ("llm_config.use_sliding_window", True, "'llm_config.use_sliding_window'"),
    ("llm_config.hidden_size", KeyError, "'llm_config.hidden_size' is required"),
    ("llm_config.eos_token_id", [151645, 151643], "'llm_config.eos_token_id'"),
    ("vision_config.hidden_act", "quick_gelu", "'vision_config.hidden_act'"),
    ("vision_config.norm_type", "batch_norm", "'vision_config.norm_type'"),
    ("vision_config.image_size", [448, 336], "'vision_config.image_size'"),
    ("vision_config.patch_size", 15, "'vision_config.patch_size'"),
    ("vision_config.num_hidden_layers", "45", "'vision_config.num_hidden_layers'"),
    ("ps_version", "v3", "'ps_version'"),
    ("use_llm_lora", 16, "'use_llm_lora'"),
    ("pad2square", True, "'pad2square'"),
    ("downsample_ratio", 0.3, "'downsample_ratio'"),
    ("select_layer", -46, "'select_layer'"),
]
B_REFUSALS = [
    ("model_type", "internvl_vision", "'model_type'"),
    ("vision_feature_select_strategy", "full", "'vision_feature_select_strategy'"),
    ("vision_feature_layer", [-1, -2], "'vision_feature_layer'"),
    ("projector_hidden_act", "relu", "'projector_hidden_act'"),
    ("image_seq_length", 64, "'image_seq_length'"),
    ("image_token_id", 152064, "'image_token_id'"),
    ("vision_config.use_mean_pooling", False, "'vision_config.use_mean_pooling'"),
    ("vision_config.use_mask_token", True, "'vision_config.use_mask_token'"),
    ("vision_config.patch_size", [14, 16], "'vision_config.patch_size'"),
    ("text_config.model_type", "llama", "'text_config.model_type'"),
    ("text_config.rope_parameters", {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0},
     "'text_config.rope_parameters.rope_type'"),
    ("text_config.layer_types", ["sliding_attention"] * 64, "'text_config.layer_types'"),
]


@pytest.mark.parametrize("field,value,message", A_REFUSALS)
def test_layout_a_refusals_name_the_field(tmp_path, field, value, message):
    raw = copy.deepcopy(SPEC_CONFIG)
    _set(raw, field, value)
    with pytest.raises(ConversionError, match=message.replace("[", r"\[")) as err:
        load_hf_config(_write(tmp_path, raw))
    assert str(tmp_path / "config.json") in str(err.value)


@pytest.mark.parametrize("field,value,message", B_REFUSALS)
def test_layout_b_refusals_name_the_field(tmp_path, field, value, message):
    cfg = load_hf_config(_write(tmp_path / "spec", SPEC_CONFIG))
    raw = hf_config_dict(cfg, "hf", "bfloat16")
    _set(raw, field, value)
    with pytest.raises(ConversionError, match=message):
        load_hf_config(_write(tmp_path / "b", raw))


def test_configs_a_layout_cannot_express_are_refused(tmp_path):
    cfg = load_hf_config(_write(tmp_path, SPEC_CONFIG))
    with pytest.raises(ConversionError, match="'ps_version' = 'v1'"):
        hf_config_dict(cfg.replace(ps_version="v1"), "hf", "bfloat16")
    odd = cfg.replace(vision=dataclasses.replace(cfg.vision, qk_norm_eps=1e-5))
    with pytest.raises(ConversionError, match="vision.qk_norm_eps"):
        hf_config_dict(odd, "hf", "bfloat16")
    with pytest.raises(ConversionError, match="vision.qk_norm_eps"):
        hf_config_dict(odd, "original", "bfloat16")


def test_missing_config_names_the_file(tmp_path):
    with pytest.raises(ConversionError, match=str(tmp_path / "config.json")):
        load_hf_config(tmp_path)
