"""Benchmark: one VLM training step (forward, backward, AdamW; fp32) in JAX vs PyTorch.

A random transformers `InternVLForConditionalGeneration` is built, saved and converted
with `r1v2_jax.convert.load_hf`, so both sides train the very same model on the very same
batch: each sequence holds one image tile (its placeholders first) and text; the loss is
the mean next-token cross-entropy over the text tokens. Both losses of the first step are
reported (they must agree: same model, same batch). Time = median over `iters` steps
after `warmup` steps, same process, same threads, the two sides' steps alternating.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time

import numpy as np


@dataclasses.dataclass(frozen=True)
class TrainBenchModel:
    """Small InternVL: ViT (image_size / patch_size)^2 patches -> r^2 of them as tokens."""

    vision_hidden: int = 256
    vision_layers: int = 4
    vision_heads: int = 4
    vision_intermediate: int = 1024
    image_size: int = 224
    patch_size: int = 14
    hidden: int = 512
    layers: int = 4
    heads: int = 8
    kv_heads: int = 2
    intermediate: int = 2048
    vocab: int = 8192


# Recomputes attention in the backward pass instead of storing its [T, T] probabilities:
# the fastest policy on CPU (PyTorch keeps every activation).
DEFAULT_REMAT = "dots_with_no_batch_dims"

QUICK_MODEL = TrainBenchModel(vision_layers=2, layers=2, hidden=256, heads=4, kv_heads=2,
                              intermediate=1024, vision_intermediate=512, vision_hidden=128)


def build_torch_model(spec: TrainBenchModel, seed: int):
    import torch
    from transformers import (InternVLConfig, InternVLForConditionalGeneration,
                              InternVLVisionConfig, Qwen2Config)

    vision = InternVLVisionConfig(
        hidden_size=spec.vision_hidden, num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads, intermediate_size=spec.vision_intermediate,
        image_size=spec.image_size, patch_size=spec.patch_size, norm_type="rms_norm",
        use_qk_norm=True)
    text = Qwen2Config(vocab_size=spec.vocab, hidden_size=spec.hidden,
                       intermediate_size=spec.intermediate, num_hidden_layers=spec.layers,
                       num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads,
                       max_position_embeddings=4096)
    grid = spec.image_size // spec.patch_size
    config = InternVLConfig(vision_config=vision, text_config=text, image_token_id=spec.vocab - 1,
                            image_seq_length=(grid // 2) ** 2, downsample_ratio=0.5)
    torch.manual_seed(seed)
    return InternVLForConditionalGeneration._from_config(config, attn_implementation="sdpa")


def make_batch(spec: TrainBenchModel, batch: int, seq_len: int, seed: int, tiles: int = 1):
    """(ids [B, T] int32, pixels [B * tiles, H, W, 3] fp32 or None when tiles == 0, loss
    mask [B, T-1] fp32). Each sequence: one text token, its tiles' placeholders, text."""
    rng = np.random.default_rng(seed)
    image_tokens = tiles * (spec.image_size // spec.patch_size // 2) ** 2
    if seq_len <= image_tokens + 1:
        raise ValueError(f"seq_len {seq_len} must exceed the {image_tokens} image tokens")
    ids = rng.integers(0, spec.vocab - 1, (batch, seq_len)).astype(np.int32)
    ids[:, 1:1 + image_tokens] = spec.vocab - 1
    pixels = rng.normal(size=(batch * tiles, spec.image_size, spec.image_size, 3))
    mask = np.ones((batch, seq_len - 1), np.float32)
    mask[:, :image_tokens] = 0.0  # targets 1..image_tokens are placeholders
    return ids, (pixels.astype(np.float32) if tiles else None), mask


def interleaved_times(steps: dict, warmup: int, iters: int) -> dict[str, list[float]]:
    """Wall times of each named step, run in turn (a, b, a, b, ...) so that a change in the
    machine's load hits both sides alike."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(iters):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return times


def jax_train_step(config, params, ids, pixels, mask, lr: float):
    """(compiled step, state): step(state) -> (state, loss), AdamW on every parameter."""
    import functools

    import jax
    import jax.numpy as jnp
    import optax

    from r1v2_jax.train.steps import sequence_token_logps

    tx = optax.adamw(lr)
    batch = jax.device_put((jnp.asarray(ids), None if pixels is None else jnp.asarray(pixels),
                            jnp.asarray(mask)))

    def loss_fn(p, ids, pixels, mask):
        # The trainers' default log-prob chunk (512 positions), not a bench-only setting.
        logps = sequence_token_logps(config, p, ids, jnp.ones_like(ids), pixels)
        return -jnp.sum(logps * mask) / jnp.sum(mask)

    @functools.partial(jax.jit, donate_argnums=(0,))
    def step(state, ids, pixels, mask):
        p, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(p, ids, pixels, mask)
        updates, opt_state = tx.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), loss

    state = jax.device_put((params, tx.init(params)))
    return (lambda s: step(s, *batch)), state


def bench_train_step(*, spec: TrainBenchModel = TrainBenchModel(), batch: int = 8,
                     seq_len: int = 512, warmup: int = 2, iters: int = 5, seed: int = 0,
                     lr: float = 1e-4, remat_policy: str = DEFAULT_REMAT, tiles: int = 1,
                     tunix: bool = False, torch_threads: int | None = None) -> dict:
    """Runs the sides; returns the figures (prints nothing). remat_policy: the JAX side's
    `VLMConfig.remat_policy`. tiles: image tiles per sequence (0: text only). tunix: also
    time Tunix's Qwen2 train step on the same LM weights and batch (text only).
    torch_threads: torch's intra-op threads (None: every core)."""
    import jax
    import torch

    from r1v2_jax.convert import load_hf
    from r1v2_jax.tools.flops import train_step_flops

    if tunix and tiles:
        raise ValueError("the Tunix peer trains the LM alone: it needs tiles=0")
    torch.set_num_threads(torch_threads or os.cpu_count() or 1)
    model = build_torch_model(spec, seed).train()
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        config, params = load_hf(folder, dtype="float32")
    config = config.replace(remat_policy=remat_policy)
    ids, pixels, mask = make_batch(spec, batch, seq_len, seed, tiles)
    steps, first, compile_s = {}, {}, {}

    def timed_first(name, step, state):
        start = time.perf_counter()
        state, loss = step(state)
        first[name] = float(jax.block_until_ready(loss))
        compile_s[name] = time.perf_counter() - start
        holder = {"state": state}

        def once():
            holder["state"], loss = step(holder["state"])
            jax.block_until_ready(loss)

        steps[name] = once

    timed_first("jax", *jax_train_step(config, params, ids, pixels, mask, lr))
    if tunix:
        from r1v2_jax.tools.bench_tunix import tunix_qwen2, tunix_train_step

        timed_first("tunix", *tunix_train_step(tunix_qwen2(config, params), ids, lr))

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    t_ids = torch.from_numpy(ids.astype(np.int64))
    t_pixels = (None if pixels is None
                else torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous())
    labels = t_ids.clone()
    labels[:, 1:][torch.from_numpy(mask) == 0] = -100  # same targets as the JAX loss
    labels[:, 0] = -100

    def torch_loss():
        return model(input_ids=t_ids, pixel_values=t_pixels, labels=labels).loss

    first["torch"] = float(torch_loss().detach())

    def torch_once():
        loss = torch_loss()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    steps["torch"] = torch_once
    times = interleaved_times(steps, warmup, iters)
    median = {name: statistics.median(t) for name, t in times.items()}
    parts = ("vision", "adapter", "text") if tiles else ("text",)
    flops = train_step_flops(config, batch, seq_len, batch * tiles, parts)
    out = {
        "model": dataclasses.asdict(spec), "batch": batch, "seq_len": seq_len, "tiles": tiles,
        "remat_policy": remat_policy,
        "params": int(sum(p.numel() for p in model.parameters())),
        "threads": torch.get_num_threads(), "device": jax.devices()[0].device_kind,
        "jax_step_s": median["jax"], "torch_step_s": median["torch"],
        "speedup": median["torch"] / median["jax"],
        "jax_times": times["jax"], "torch_times": times["torch"], "jax_compile_s": compile_s["jax"],
        "first_loss_jax": first["jax"], "first_loss_torch": first["torch"],
        "model_flops": flops.model, "jax_flops_per_s": flops.model / median["jax"],
        "torch_flops_per_s": flops.model / median["torch"],
    }
    if tunix:
        out.update(tunix_step_s=median["tunix"], tunix_times=times["tunix"],
                   tunix_speedup=median["tunix"] / median["jax"], first_loss_tunix=first["tunix"],
                   tunix_compile_s=compile_s["tunix"])
    return out
