"""`r1v2 bench --device gpu`: the GPU figures in one command (< 10 min on one H100/H200),
written to a JSON file. NOT YET RUN ON A GPU (no device was lent while it was written):
its CPU-side logic is tested with a tiny fake run (tests/tools/test_bench_gpu.py).

  mfu        train step (fwd + bwd + AdamW, bf16) of a ~1.5B Qwen2 LM at sequence 4096 with
             cuDNN flash attention: model FLOPs / step time / the chip's bf16 peak;
  decode     one KV-cached decode step at batch >= 64 against a 4096-slot cache: bytes it
             must read (weights + KV) / step time / the chip's HBM bandwidth;
  vs_torch   the same train step and sampled generation (batch 64) in PyTorch +
             transformers on the same GPU (bf16, sdpa attention, AdamW, `generate` with
             a KV cache): JAX / PyTorch ratios, as in the CPU sweep's table.

Each part runs in turn; a part that fails (e.g. out of memory) records its error in the
file and the others still run. Random weights (speed does not depend on their values);
each side initialises its own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
import traceback

from r1v2_jax.models.config import VLMConfig
from r1v2_jax.tools.bench_accel import LM_1P5B


@dataclasses.dataclass(frozen=True)
class GpuPlan:
    config: VLMConfig = LM_1P5B
    train_batch: int = 2
    seq_len: int = 4096
    decode_batch: int = 64
    cache_len: int = 4096
    gen_prompt_len: int = 128
    gen_new_tokens: int = 128
    warmup: int = 2
    iters: int = 5
    attention_impl: str = "cudnn"
    parts: tuple[str, ...] = ("mfu", "decode", "jax_generate_tps", "torch_train_step_s",
                              "torch_generate_tps")


def torch_lm(config: VLMConfig, device: str):
    """A random transformers Qwen2ForCausalLM of `config.text`'s shapes, in config.dtype."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tc = config.text
    cfg = Qwen2Config(vocab_size=tc.vocab_size, hidden_size=tc.hidden_size,
                      intermediate_size=tc.intermediate_size,
                      num_hidden_layers=tc.num_hidden_layers,
                      num_attention_heads=tc.num_attention_heads,
                      num_key_value_heads=tc.num_key_value_heads,
                      max_position_embeddings=max(tc.max_position_embeddings, 8192),
                      tie_word_embeddings=tc.tie_word_embeddings, rope_theta=tc.rope_theta)
    torch.manual_seed(0)
    dtype = getattr(torch, config.dtype)
    return Qwen2ForCausalLM._from_config(cfg, attn_implementation="sdpa",
                                         dtype=dtype).to(device)


def _timed(fn, warmup: int, iters: int, sync) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def torch_train_step_s(config: VLMConfig, batch: int, seq_len: int, device: str,
                       warmup: int, iters: int) -> float:
    import torch

    model = torch_lm(config, device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(0, config.text.vocab_size, (batch, seq_len), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    s = statistics.median(_timed(step, warmup, iters, sync))
    del model, opt
    return s


def torch_generate_tps(config: VLMConfig, batch: int, prompt_len: int, new_tokens: int,
                       device: str, warmup: int, iters: int) -> float:
    import torch

    model = torch_lm(config, device).eval()
    ids = torch.randint(1, config.text.vocab_size, (batch, prompt_len), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run():
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                           temperature=0.6, top_p=0.95, max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0)

    s = statistics.median(_timed(run, 1 if warmup else 0, max(1, iters // 2), sync))
    del model
    return batch * new_tokens / s


def jax_generate_tps(config: VLMConfig, batch: int, prompt_len: int, new_tokens: int,
                     warmup: int, iters: int) -> float:
    import jax
    import numpy as np

    from r1v2_jax.generate.api import generate
    from r1v2_jax.models import init_params

    params = jax.jit(lambda r: init_params(config, r))(jax.random.key(0))
    ids = np.random.default_rng(0).integers(1, config.text.vocab_size, (batch, prompt_len))

    def run():
        out = generate(config, params, ids, max_new_tokens=new_tokens, eos_token_id=(),
                       pad_token_id=0, temperature=0.6, top_p=0.95,
                       suppress_tokens=())  # text only: nothing to suppress, as transformers
        jax.block_until_ready(out.tokens)

    s = statistics.median(_timed(run, 1 if warmup else 0, max(1, iters // 2), lambda: None))
    return batch * new_tokens / s


def run_gpu_bench(out_path: str, plan: GpuPlan = GpuPlan(), *, chip=None,
                  torch_device: str | None = None, log=print) -> dict:
    """Runs every part, writes {"device", "chip", "plan", parts...} to `out_path` (JSON,
    written once at the end through a temporary file); returns it. chip / torch_device:
    overrides for a fake run on a CPU (the tests): the peak to divide by, and torch's
    device (default "cuda")."""
    import jax

    from r1v2_jax.tools.bench_accel import _accelerator, bench_decode_bandwidth, bench_mfu
    from r1v2_jax.tools.flops import train_step_flops

    device = jax.devices()[0]
    chip = chip or _accelerator(device, "the GPU benchmark")
    torch_device = torch_device or "cuda"
    config = plan.config.replace(attention_impl=plan.attention_impl)
    out: dict = {"device": device.device_kind, "chip": dataclasses.asdict(chip),
                 "plan": {k: v for k, v in dataclasses.asdict(plan).items() if k != "config"},
                 "config_text": dataclasses.asdict(plan.config.text),
                 "dtype": plan.config.dtype, "errors": {}}

    def part(name, fn):
        if name not in plan.parts:
            return
        start = time.perf_counter()
        try:
            out[name] = fn()
        except Exception as e:  # recorded in the file; the other parts still run
            out["errors"][name] = "".join(traceback.format_exception_only(e)).strip()
            out[f"{name}_traceback"] = traceback.format_exc()
        log(f"{name}: {time.perf_counter() - start:.0f} s"
            + (f" FAILED: {out['errors'][name]}" if name in out["errors"] else ""))

    part("mfu", lambda: bench_mfu(config, batch=plan.train_batch, seq_len=plan.seq_len,
                                  attention_impl=plan.attention_impl, warmup=plan.warmup,
                                  iters=plan.iters, chip=chip))
    part("decode", lambda: bench_decode_bandwidth(config, batch=plan.decode_batch,
                                                  cache_len=plan.cache_len, chip=chip,
                                                  warmup=plan.warmup, iters=plan.iters))
    part("jax_generate_tps", lambda: jax_generate_tps(
        config.replace(attention_impl="xla"), plan.decode_batch, plan.gen_prompt_len,
        plan.gen_new_tokens, plan.warmup, plan.iters))
    part("torch_train_step_s", lambda: torch_train_step_s(
        config, plan.train_batch, plan.seq_len, torch_device, plan.warmup, plan.iters))
    part("torch_generate_tps", lambda: torch_generate_tps(
        config, plan.decode_batch, plan.gen_prompt_len, plan.gen_new_tokens, torch_device,
        plan.warmup, plan.iters))
    if "mfu" in out and "torch_train_step_s" in out:
        flops = train_step_flops(config, plan.train_batch, plan.seq_len, 0, ("text",)).model
        out["vs_torch_train"] = out["torch_train_step_s"] / out["mfu"]["step_s"]
        out["torch_mfu"] = flops / out["torch_train_step_s"] / chip.bf16_flops
    if "jax_generate_tps" in out and "torch_generate_tps" in out:
        out["vs_torch_generate"] = out["jax_generate_tps"] / out["torch_generate_tps"]
    tmp = f"{out_path}.tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=2)
    os.replace(tmp, out_path)
    return out


def format_gpu(r: dict) -> str:
    lines = [f"device {r['device']} (peak {r['chip']['bf16_flops'] / 1e12:.0f} TFLOP/s bf16, "
             f"{r['chip']['hbm_bandwidth'] / 1e9:.0f} GB/s)"]
    if "mfu" in r:
        m = r["mfu"]
        lines.append(f"train step B{m['batch']}xT{m['seq_len']} ({m['attention_impl']}): "
                     f"{m['step_s'] * 1e3:.0f} ms, MFU {100 * m['mfu']:.1f}%")
    if "decode" in r:
        d = r["decode"]
        lines.append(f"decode batch {d['batch']}, cache {d['cache_len']}: "
                     f"{d['step_s'] * 1e3:.2f} ms/step, {100 * d['bandwidth_use']:.1f}% of HBM "
                     f"bandwidth, {d['tokens_per_s']:.0f} tok/s")
    if "vs_torch_train" in r:
        lines.append(f"vs PyTorch train step: {r['torch_train_step_s'] * 1e3:.0f} ms -> "
                     f"{r['vs_torch_train']:.2f}x (PyTorch MFU {100 * r['torch_mfu']:.1f}%)")
    if "vs_torch_generate" in r:
        lines.append(f"generation: JAX {r['jax_generate_tps']:.0f} tok/s, transformers "
                     f"{r['torch_generate_tps']:.0f} tok/s -> {r['vs_torch_generate']:.2f}x")
    for name, err in r["errors"].items():
        lines.append(f"{name} FAILED: {err}")
    return "\n".join(lines)
