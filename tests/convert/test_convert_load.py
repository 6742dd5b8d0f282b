"""load_hf against the transformers model it came from, and bad checkpoints refused precisely."""

import json
import shutil
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from r1v2_jax.convert import ConversionError, convert_to_jax, load_hf
from r1v2_jax.convert.mapping import flatten, rules_for
from tests.hf_fixtures import make_tiny_hf

INDEX = "model.safetensors.index.json"
# in-memory transformers name prefix -> saved (canonical) prefix
_SAVED = (("model.vision_tower.", "vision_tower."),
          ("model.multi_modal_projector.", "multi_modal_projector."),
          ("model.language_model.", "language_model.model."),
          ("lm_head.", "language_model.lm_head."))


def saved_name(name: str) -> str:
    for memory, saved in _SAVED:
        if name.startswith(memory):
            return saved + name[len(memory):]
    return name


def assert_params_equal_model(config, params, model):
    """Every layout-B tensor rebuilt from `params` equals the torch model's, bit for bit."""
    state = {saved_name(k): v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
             for k, v in model.state_dict().items()}
    flat = flatten(params)
    n = 0
    for rule in rules_for(config, "hf"):
        for key, layer in rule.instances():
            pieces = [flat[leaf] if layer is None else flat[leaf][layer] for leaf in rule.leaves]
            got = rule.to_hf(pieces).astype(np.float32)
            np.testing.assert_array_equal(got, state[key].astype(np.float32), err_msg=key)
            n += 1
    expected = len(state) - (1 if config.text.tie_word_embeddings else 0)
    assert n == expected


@pytest.mark.parametrize("layout", ["hf", "original"])
@pytest.mark.parametrize("options", [
    {}, dict(tie=True, qkv_bias=True, norm_type="layer_norm", qk_norm=False, num_kv_heads=4)])
def test_load_hf_reproduces_every_tensor(tmp_path, layout, options):
    path, model = make_tiny_hf(tmp_path, layout=layout, **options)
    config, params = load_hf(path)
    assert config.text.tie_word_embeddings == options.get("tie", False)
    assert config.vision.qkv_bias == options.get("qkv_bias", False)
    assert config.image_token_id == 100 and config.param_dtype == "float32"
    assert all(v.dtype == np.float32 for v in flatten(params).values())
    assert_params_equal_model(config, params, model)


def test_load_hf_keeps_or_casts_dtype(tmp_path):
    path, model = make_tiny_hf(tmp_path, dtype=torch.bfloat16)
    config, params = load_hf(path)
    assert config.param_dtype == "bfloat16"
    assert {v.dtype for v in flatten(params).values()} == {np.dtype(ml_dtypes.bfloat16)}
    assert_params_equal_model(config, params, model)
    config, params = load_hf(path, dtype="float32")  # bf16 -> f32 is exact
    assert config.param_dtype == "float32"
    assert_params_equal_model(config, params, model)


def _rewrite(folder: Path, edit):
    """Applies edit(tensors_by_file: {file: {key: array}}) and rewrites files and index."""
    index = json.loads((folder / INDEX).read_text())
    files = sorted(set(index["weight_map"].values()))
    shards = {f: load_file(folder / f) for f in files}
    edit(shards)
    index["weight_map"] = {k: f for f, tensors in shards.items() for k in tensors}
    for f, tensors in shards.items():
        save_file(tensors, folder / f, metadata={"format": "pt"})
    (folder / INDEX).write_text(json.dumps(index))


def _file_of(shards, key):
    return next(f for f, tensors in shards.items() if key in tensors)


def test_in_memory_key_spellings_are_accepted(tmp_path):
    path, model = make_tiny_hf(tmp_path)

    def rename(shards):
        for f, tensors in shards.items():
            renamed = {}
            for k, v in tensors.items():
                for memory, saved in _SAVED:
                    if k.startswith(saved):
                        k = memory + k[len(saved):]
                        break
                renamed[k] = v
            shards[f] = renamed

    _rewrite(path, rename)
    index = json.loads((path / INDEX).read_text())
    assert "lm_head.weight" in index["weight_map"]
    config, params = load_hf(path)
    assert_params_equal_model(config, params, model)


@pytest.fixture(scope="module")
def clean_b(tmp_path_factory):
    return make_tiny_hf(tmp_path_factory.mktemp("clean"))[0]


UP1 = "language_model.model.layers.1.mlp.up_proj.weight"
Q0 = "vision_tower.encoder.layer.0.attention.q_proj.weight"


def _missing(shards):
    del shards[_file_of(shards, UP1)][UP1]


def _extra(shards):
    extra = "vision_tower.encoder.layer.0.attention.rel_pos"
    shards[_file_of(shards, Q0)][extra] = np.ones(3, np.float32)


def _misshaped(shards):
    f = _file_of(shards, UP1)
    shards[f][UP1] = shards[f][UP1][:-1]


def _wrong_dtype(shards):
    f = _file_of(shards, Q0)
    shards[f][Q0] = shards[f][Q0].astype(np.int32)


def _mixed_dtype(shards):
    f = _file_of(shards, UP1)
    shards[f][UP1] = shards[f][UP1].astype(np.float16)


def _duplicate_spelling(shards):
    f = _file_of(shards, Q0)
    shards[f]["model." + Q0] = shards[f][Q0]


CORRUPTIONS = [
    (_missing, ["missing tensor", UP1]),
    (_extra, ["unexpected tensor", "attention.rel_pos", "model-0000"]),
    (_misshaped, [UP1, "has shape [95, 48]", "[96, 48]", "model-0000"]),
    (_wrong_dtype, [Q0, "dtype I32", "model-0000"]),
    (_mixed_dtype, [UP1, "is F16 but", "layers.0.mlp.up_proj.weight", "pass dtype="]),
    (_duplicate_spelling, ["model." + Q0, "duplicates", Q0]),
]


def _assert_refused(src: Path, tmp_path: Path, fragments, **kwargs):
    with pytest.raises(ConversionError) as err:
        load_hf(src, **kwargs)
    for fragment in fragments:
        assert fragment in str(err.value), (fragment, str(err.value))
    dst = tmp_path / "out"
    with pytest.raises(ConversionError):
        convert_to_jax(src, dst, **kwargs)
    assert not dst.exists() and not list(tmp_path.glob(".out*")), "converter wrote output"


@pytest.mark.parametrize("corrupt,fragments", CORRUPTIONS, ids=[c[0].__name__ for c in CORRUPTIONS])
def test_bad_tensors_are_refused_by_name_and_file(clean_b, tmp_path, corrupt, fragments):
    src = Path(shutil.copytree(clean_b, tmp_path / "src"))
    _rewrite(src, corrupt)
    _assert_refused(src, tmp_path, fragments, dtype=None)


def test_mixed_dtypes_are_fine_when_casting(clean_b, tmp_path):
    src = Path(shutil.copytree(clean_b, tmp_path / "src"))
    _rewrite(src, _mixed_dtype)
    _, params = load_hf(src, dtype="float32")
    assert params["text"]["layers"]["mlp"]["up_proj"]["kernel"].dtype == np.float32


def test_truncated_file_names_file_and_lost_tensors(clean_b, tmp_path):
    src = Path(shutil.copytree(clean_b, tmp_path / "src"))
    index = json.loads((src / INDEX).read_text())
    shard = src / index["weight_map"][UP1]
    header = load_file(shard)
    data = shard.read_bytes()
    shard.write_bytes(data[:-1000])
    _assert_refused(src, tmp_path, [shard.name, "truncated"])
    with pytest.raises(ConversionError) as err:
        load_hf(src)
    assert any(key in str(err.value) for key in header)  # names a lost tensor
    shard.write_bytes(data[:5])
    _assert_refused(src, tmp_path, [shard.name, "truncated"])


def test_index_inconsistencies(clean_b, tmp_path):
    src = Path(shutil.copytree(clean_b, tmp_path / "src"))
    index = json.loads((src / INDEX).read_text())
    real = index["weight_map"][UP1]
    other = next(f for f in sorted(set(index["weight_map"].values())) if f != real)
    index["weight_map"][UP1] = other
    (src / INDEX).write_text(json.dumps(index))
    _assert_refused(src, tmp_path, [UP1, real, f"lists it in {other}"])
    index["weight_map"][UP1] = "model-00009-of-00009.safetensors"
    (src / INDEX).write_text(json.dumps(index))
    _assert_refused(src, tmp_path, ["model-00009-of-00009.safetensors", "missing file"])


def test_tied_checkpoint_with_a_different_lm_head_is_refused(tmp_path):
    src, _ = make_tiny_hf(tmp_path, tie=True)
    _rewrite(src, lambda shards: shards[sorted(shards)[0]].update(
        {"language_model.lm_head.weight": np.zeros((128, 48), np.float32)}))
    _assert_refused(src, tmp_path, ["language_model.lm_head.weight", "tie_word_embeddings=true"])


def test_tied_checkpoint_with_an_equal_lm_head_loads(tmp_path):
    src, model = make_tiny_hf(tmp_path, tie=True)
    embed = model.model.language_model.embed_tokens.weight.detach().numpy().copy()
    _rewrite(src, lambda shards: shards[sorted(shards)[0]].update(
        {"language_model.lm_head.weight": embed}))
    config, params = load_hf(src)
    assert "lm_head" not in params["text"]
    assert_params_equal_model(config, params, model)


def test_unknown_architecture_is_refused(clean_b, tmp_path):
    src = Path(shutil.copytree(clean_b, tmp_path / "src"))
    raw = json.loads((src / "config.json").read_text())
    raw["architectures"] = ["InternVLForSequenceClassification"]
    (src / "config.json").write_text(json.dumps(raw))
    _assert_refused(src, tmp_path, ["'architectures'", "InternVLForSequenceClassification"])


def test_unsupported_config_value_is_refused(clean_b, tmp_path):
    src = Path(shutil.copytree(clean_b, tmp_path / "src"))
    raw = json.loads((src / "config.json").read_text())
    raw["text_config"]["rope_scaling"] = {"rope_type": "linear", "factor": 2.0}
    (src / "config.json").write_text(json.dumps(raw))
    _assert_refused(src, tmp_path, ["'text_config.rope_scaling'"])
