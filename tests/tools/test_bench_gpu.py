"""`r1v2 bench --device gpu` (bench_gpu.py) has not run on a GPU; this is a tiny fake run
on the CPU (a made-up chip, xla attention, torch on the CPU) checking its arithmetic and
the file it writes."""

import json

import pytest

pytest.importorskip("transformers")

from r1v2_jax.models.config import TextConfig, VisionConfig, VLMConfig  # noqa: E402
from r1v2_jax.tools.bench_gpu import GpuPlan, format_gpu, run_gpu_bench  # noqa: E402
from r1v2_jax.tools.chips import Chip  # noqa: E402
from r1v2_jax.tools.flops import decode_step_cost, train_step_flops  # noqa: E402

TINY = VLMConfig(
    vision=VisionConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                        intermediate_size=16, image_size=28, patch_size=14),
    text=TextConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                    tie_word_embeddings=True),
    param_dtype="float32", dtype="float32", remat_policy="dots_with_no_batch_dims")
CHIP = Chip("fake", bf16_flops=1e9, hbm_bytes=1e9, hbm_bandwidth=1e8)


def test_fake_run_writes_every_figure(tmp_path):
    plan = GpuPlan(config=TINY, train_batch=2, seq_len=16, decode_batch=3, cache_len=8,
                   gen_prompt_len=4, gen_new_tokens=3, warmup=0, iters=1, attention_impl="xla")
    path = tmp_path / "gpu.json"
    r = run_gpu_bench(str(path), plan, chip=CHIP, torch_device="cpu", log=lambda m: None)
    assert json.loads(path.read_text()) == json.loads(json.dumps(r))
    assert r["errors"] == {} and not (tmp_path / "gpu.json.tmp").exists()
    m, d = r["mfu"], r["decode"]
    flops = train_step_flops(TINY, 2, 16, 0, ("text",)).model
    assert m["model_flops"] == flops and m["mfu"] == pytest.approx(flops / m["step_s"] / 1e9)
    cost = decode_step_cost(TINY, 3, 8, 4, 4)  # fp32 weights and cache
    assert d["bytes"] == cost.bytes and d["bandwidth_use"] == pytest.approx(
        cost.bytes / d["step_s"] / 1e8)
    assert r["vs_torch_train"] == pytest.approx(r["torch_train_step_s"] / m["step_s"])
    assert r["torch_mfu"] == pytest.approx(flops / r["torch_train_step_s"] / 1e9)
    assert r["vs_torch_generate"] == pytest.approx(r["jax_generate_tps"] / r["torch_generate_tps"])
    text = format_gpu(r)
    assert f"MFU {100 * m['mfu']:.1f}%" in text and "vs PyTorch train step" in text


def test_a_failing_part_is_recorded_and_the_rest_runs(tmp_path):
    plan = GpuPlan(config=TINY, train_batch=2, seq_len=16, decode_batch=3, cache_len=8,
                   gen_prompt_len=4, gen_new_tokens=3, warmup=0, iters=1,
                   attention_impl="nope",  # the train step's attention fails
                   parts=("mfu", "decode"))
    r = run_gpu_bench(str(tmp_path / "gpu.json"), plan, chip=CHIP, torch_device="cpu",
                      log=lambda m: None)
    assert "attention_impl must be" in r["errors"]["mfu"] and "decode" in r
    assert "vs_torch_train" not in r and "torch_train_step_s" not in r  # not in parts
    assert "FAILED" in format_gpu(r)


def test_gpu_bench_refuses_a_cpu_without_a_chip(tmp_path):
    with pytest.raises(RuntimeError, match="needs a GPU/TPU"):
        run_gpu_bench(str(tmp_path / "gpu.json"), GpuPlan(config=TINY))
    assert not (tmp_path / "gpu.json").exists()
