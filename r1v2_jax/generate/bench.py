"""Benchmark: sampled generation of this engine vs transformers `generate` (same model).

One random transformers `InternVLForConditionalGeneration` is built, saved, and converted
with `r1v2_jax.convert.load_hf`, so both sides run the very same weights. Both generate
exactly `new_tokens` tokens per row (no stop token) with temperature/top-p sampling and a
KV cache; throughput = batch * new_tokens / the best wall time of `repeats` runs after
one warm-up (best-of: the CPU may be shared; our first call, with its compilation, is
reported separately). The G-samples check generates G samples
for each of batch/G prompts from one shared prefill and compares with the same prompts
repeated G times (num_samples=1, same per-row sample ids): same tokens, G times fewer
prefilled rows.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time

import numpy as np


@dataclasses.dataclass(frozen=True)
class BenchModel:
    """The small Qwen2 (+ a minimal vision tower) of the benchmark. At this size a decode
    step is cheap enough that the engine's per-token overhead decides throughput; much
    wider models make both sides memory-bound on CPU (see docs/generation.md)."""

    vocab_size: int = 4096
    hidden_size: int = 128
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_hidden_size: int = 32
    image_size: int = 28
    patch_size: int = 7


def build_torch_model(spec: BenchModel, seed: int):
    """A randomly initialised transformers InternVL model (eval mode, eager attention)."""
    import torch
    from transformers import (InternVLConfig, InternVLForConditionalGeneration,
                              InternVLVisionConfig, Qwen2Config)

    vision = InternVLVisionConfig(
        hidden_size=spec.vision_hidden_size, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=2 * spec.vision_hidden_size, image_size=spec.image_size,
        patch_size=spec.patch_size, norm_type="rms_norm", use_qk_norm=True)
    text = Qwen2Config(
        vocab_size=spec.vocab_size, hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads, max_position_embeddings=4096)
    grid = spec.image_size // spec.patch_size
    config = InternVLConfig(vision_config=vision, text_config=text,
                            image_token_id=spec.vocab_size - 1,
                            image_seq_length=(grid // 2) ** 2, downsample_ratio=0.5)
    torch.manual_seed(seed)
    return InternVLForConditionalGeneration._from_config(config, attn_implementation="eager").eval()


def twin_models(spec: BenchModel, seed: int):
    """(torch model, our config, our params on the device): one random model on both
    sides, ours converted from the transformers checkpoint it saves."""
    import jax

    from r1v2_jax.convert import load_hf

    torch_model = build_torch_model(spec, seed)
    with tempfile.TemporaryDirectory() as folder:
        torch_model.save_pretrained(folder)
        config, params = load_hf(folder)
    return torch_model, config, jax.device_put(params)


def _best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_generation(*, batch: int = 8, new_tokens: int = 128, prompt_len: int = 32,
                     temperature: float = 0.6, top_p: float = 0.95, num_samples: int = 4,
                     repeats: int = 3, seed: int = 0, model: BenchModel = BenchModel(),
                     target_speedup: float = 3.0, torch_threads: int | None = None) -> dict:
    """Runs the benchmark; returns the figures (prints nothing).

    torch_threads: torch's intra-op threads for this run (None: torch's default); with
    the cores shared by other jobs, torch's multi-threaded matmuls stall, 1 is steadier.
    """
    import torch

    if batch % num_samples:
        raise ValueError(f"batch={batch} must be a multiple of num_samples={num_samples}")
    threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads or threads)
    try:
        return _run(batch, new_tokens, prompt_len, temperature, top_p, num_samples, repeats,
                    seed, model, target_speedup)
    finally:
        torch.set_num_threads(threads)  # a library call leaves torch as it found it


def _run(batch, new_tokens, prompt_len, temperature, top_p, num_samples, repeats, seed,
         model, target_speedup) -> dict:
    import jax
    import torch

    from r1v2_jax.generate.api import generate
    from r1v2_jax.generate.engine import engine_stats

    torch_model, config, params = twin_models(model, seed)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, model.vocab_size - 1, (batch, prompt_len))
    sampling = dict(temperature=temperature, top_p=top_p)

    def ours(prompts, g=1, sample_ids=None):
        out = generate(config, params, prompts, max_new_tokens=new_tokens, eos_token_id=(),
                       pad_token_id=0, num_samples=g, seed=seed, sample_ids=sample_ids,
                       **sampling)
        return jax.block_until_ready(out)

    torch_ids = torch.tensor(ids)

    def theirs():
        with torch.no_grad():
            out = torch_model.generate(
                input_ids=torch_ids, attention_mask=torch.ones_like(torch_ids), do_sample=True,
                max_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0, use_cache=True,
                **sampling)
        if out.shape[1] - prompt_len != new_tokens:
            raise RuntimeError(f"transformers stopped after {out.shape[1] - prompt_len} tokens")
        return out

    start = time.perf_counter()
    ours(ids)  # compiles unless this process already holds the program
    first_call_s = time.perf_counter() - start
    theirs()  # warm-up
    jax_s = _best_time(lambda: ours(ids), repeats)
    torch_s = _best_time(theirs, repeats)
    generated = batch * new_tokens

    # G samples per prompt from one prefill vs the prompts repeated G times.
    prompts = ids[: batch // num_samples]
    row_ids = np.arange(batch)
    before = engine_stats()
    shared = ours(prompts, num_samples, row_ids)
    mid = engine_stats()
    unshared = ours(np.repeat(prompts, num_samples, 0), 1, row_ids)
    after = engine_stats()
    shared_s = _best_time(lambda: ours(prompts, num_samples, row_ids), repeats)
    unshared_s = _best_time(lambda: ours(np.repeat(prompts, num_samples, 0), 1, row_ids),
                              repeats)
    speedup = (generated / jax_s) / (generated / torch_s)
    return {
        "device": jax.devices()[0].device_kind,
        "torch_threads": torch.get_num_threads(),
        "model": dataclasses.asdict(model),
        "batch": batch, "new_tokens": new_tokens, "prompt_len": prompt_len,
        "temperature": temperature, "top_p": top_p,
        "jax_tokens_per_s": generated / jax_s,
        "torch_tokens_per_s": generated / torch_s,
        "speedup": speedup,
        "target_speedup": target_speedup,
        "meets_target": speedup >= target_speedup,
        "jax_first_call_s": first_call_s,
        "shared_prefill": {
            "num_samples": num_samples,
            "prompts": len(prompts),
            "prefill_rows_shared": mid.prefill_rows - before.prefill_rows,
            "prefill_rows_unshared": after.prefill_rows - mid.prefill_rows,
            "same_tokens": bool(np.array_equal(np.asarray(shared.tokens),
                                               np.asarray(unshared.tokens))),
            "shared_s": shared_s,
            "unshared_s": unshared_s,
        },
    }
