"""HF -> JAX (orbax) -> HF is bit-exact in every direction; transformers loads what we write."""

import glob
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import r1v2_jax.convert.hf_load as hf_load
from r1v2_jax.cli import main as cli_main
from r1v2_jax.convert import (ConversionError, convert_to_hf, convert_to_jax, load_hf,
                              load_hf_config, load_jax_checkpoint, save_hf, save_jax_checkpoint)
from r1v2_jax.convert.mapping import flatten
from tests.hf_fixtures import IMAGE_TOKEN_ID, make_tiny_hf

REPO = Path(__file__).resolve().parents[2]


def tensors(folder) -> dict[str, np.ndarray]:
    out = {}
    for file in glob.glob(f"{folder}/*.safetensors"):
        out.update(load_file(file))
    return out


def assert_same_tensors(a, b):
    ta, tb = tensors(a), tensors(b)
    assert sorted(ta) == sorted(tb)
    for key in ta:
        assert ta[key].dtype == tb[key].dtype and ta[key].shape == tb[key].shape, key
        assert ta[key].tobytes() == tb[key].tobytes(), key


def same_config(a, b) -> bool:
    """Equal up to the preprocessing fields transformers' config does not carry."""
    keep = dict(dynamic_image_size=True, use_thumbnail=True, max_dynamic_patch=12,
                min_dynamic_patch=1, template="t", force_image_size=a.vision.image_size)
    return a.replace(**keep) == b.replace(**keep)


OPTIONS = [({}, torch.float32),
           (dict(tie=True, qkv_bias=True, norm_type="layer_norm", num_kv_heads=1), torch.bfloat16)]


@pytest.mark.parametrize("src_layout,dst_layout", [("hf", "hf"), ("original", "original"),
                                                   ("original", "hf"), ("hf", "original")])
@pytest.mark.parametrize("options,dtype", OPTIONS, ids=["f32", "bf16-tied-bias-layernorm"])
def test_hf_to_jax_to_hf_is_bit_exact(tmp_path, src_layout, dst_layout, options, dtype):
    src, _ = make_tiny_hf(tmp_path, layout=src_layout, dtype=dtype, **options)
    reference, _ = make_tiny_hf(tmp_path, layout=dst_layout, dtype=dtype, **options)  # same seed
    convert_to_jax(src, tmp_path / "jax", dtype=None)
    out = convert_to_hf(tmp_path / "jax", tmp_path / "out", dst_layout, shard_size="50KB")
    assert_same_tensors(reference, out)
    assert same_config(load_hf_config(out), load_hf_config(reference))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # really sharded
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in tensors(out).values())


def test_in_memory_save_hf_round_trip_and_jax_checkpoint(tmp_path):
    src, _ = make_tiny_hf(tmp_path, layout="original")
    config, params = load_hf(src)
    save_hf(config, params, tmp_path / "again", layout="original")
    assert_same_tensors(src, tmp_path / "again")
    save_jax_checkpoint(config, params, tmp_path / "ckpt")
    config2, params2 = load_jax_checkpoint(tmp_path / "ckpt")
    assert config2 == config
    for key, value in flatten(params).items():
        assert flatten(params2)[key].tobytes() == value.tobytes(), key
    config3, params3 = load_jax_checkpoint(tmp_path / "ckpt", dtype="bfloat16")
    assert config3.param_dtype == "bfloat16"
    for key, value in flatten(params).items():
        np.testing.assert_array_equal(flatten(params3)[key], value.astype(ml_dtypes.bfloat16))


def test_to_jax_casts_to_bfloat16_by_default(tmp_path):
    src, _ = make_tiny_hf(tmp_path)
    convert_to_jax(src, tmp_path / "jax")
    config, params = load_jax_checkpoint(tmp_path / "jax")
    ref_config, ref = load_hf(src, dtype="bfloat16")
    assert config == ref_config and config.param_dtype == "bfloat16"
    for key, value in flatten(ref).items():
        got = flatten(params)[key]
        assert got.dtype == np.dtype(ml_dtypes.bfloat16) and got.tobytes() == value.tobytes()


def test_transformers_loads_layout_b_written_from_layout_a(tmp_path):
    from transformers import InternVLForConditionalGeneration

    src, model_a = make_tiny_hf(tmp_path, layout="original", qkv_bias=True)
    convert_to_jax(src, tmp_path / "jax", dtype=None)
    convert_to_hf(tmp_path / "jax", tmp_path / "hf", "hf")
    loaded = InternVLForConditionalGeneration.from_pretrained(
        tmp_path / "hf", attn_implementation="eager").eval()
    ids = torch.tensor([[5, *[IMAGE_TOKEN_ID] * 4, 7, 9, 11]])
    pixels = torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model_a(input_ids=ids, pixel_values=pixels).logits
        got = loaded(input_ids=ids, pixel_values=pixels).logits
    assert torch.equal(got, want)  # same weights, same code: identical logits


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    src, _ = make_tiny_hf(tmp_path)
    convert_to_jax(src, tmp_path / "jax")
    calls = []
    real = hf_load.read_tensor

    def failing(info):
        calls.append(info.key)
        if len(calls) == 10:
            raise OSError("disk went away")
        return real(info)

    monkeypatch.setattr(hf_load, "read_tensor", failing)
    with pytest.raises(OSError, match="disk went away"):
        convert_to_jax(src, tmp_path / "jax2")
    assert not (tmp_path / "jax2").exists() and not list(tmp_path.glob(".jax2*"))
    with pytest.raises(ConversionError, match="already exists"):
        convert_to_hf(tmp_path / "jax", src, "hf")
    with pytest.raises(ConversionError, match="'ps_version' = 'v1'"):
        config, params = load_jax_checkpoint(tmp_path / "jax")
        save_hf(config.replace(ps_version="v1"), params, tmp_path / "v1", layout="hf")
    assert not (tmp_path / "v1").exists()


def test_cli_converts_both_ways_and_reports_errors(tmp_path, capsys):
    src, _ = make_tiny_hf(tmp_path, layout="original")
    assert cli_main(["convert", "to-jax", str(src), str(tmp_path / "jax"), "--dtype", "keep",
                     "--max-chunk-size", "2KB"]) == 0
    assert cli_main(["convert", "to-hf", str(tmp_path / "jax"), str(tmp_path / "hf"),
                     "--layout", "original", "--shard-size", "40KB"]) == 0
    assert_same_tensors(src, tmp_path / "hf")
    assert cli_main(["convert", "to-jax", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 2
    assert "config.json: not found" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_entry_point_scripts(tmp_path):
    src, _ = make_tiny_hf(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    run = lambda *args: subprocess.run([sys.executable, *args], env=env, capture_output=True,
                                       text=True, timeout=120)
    result = run(str(REPO / "convert/hf_to_jax.py"), str(src), str(tmp_path / "jax"))
    assert result.returncode == 0, result.stderr
    result = run(str(REPO / "convert/jax_to_hf.py"), str(tmp_path / "jax"), str(tmp_path / "hf"),
                 "--layout", "hf")
    assert result.returncode == 0, result.stderr
    _, want = load_hf(src, dtype="bfloat16")
    _, got = load_hf(tmp_path / "hf")
    for key, value in flatten(want).items():
        assert flatten(got)[key].tobytes() == value.tobytes(), key


def test_restore_straight_into_shardings(tmp_path):
    """Two CPU devices: stacked leaves split over the layers axis, each device its half."""
    src, _ = make_tiny_hf(tmp_path)
    convert_to_jax(src, tmp_path / "jax", dtype=None)
    script = textwrap.dedent(f"""
        import jax, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        from r1v2_jax.convert import load_hf, load_jax_checkpoint
        from r1v2_jax.convert.mapping import flatten, unflatten
        assert jax.device_count() == 2
        mesh = Mesh(np.array(jax.devices()), ("layers",))
        config, want = load_hf({str(src)!r})
        shardings = unflatten({{k: NamedSharding(mesh, P("layers") if "layers" in k else P())
                               for k in flatten(want)}})
        _, got = load_jax_checkpoint({str(tmp_path / "jax")!r}, shardings=shardings)
        for k, v in flatten(want).items():
            g = flatten(got)[k]
            assert g.sharding == flatten(shardings)[k], k
            shard_rows = {{s.data.shape[0] for s in g.addressable_shards}}
            assert shard_rows == ({{v.shape[0] // 2}} if "layers" in k else {{v.shape[0]}}), k
            np.testing.assert_array_equal(np.asarray(g), v)
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
