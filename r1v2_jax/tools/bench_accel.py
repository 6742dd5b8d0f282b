"""Accelerator figures (GPU / TPU only): train-step MFU and decode HBM-bandwidth use.

MFU = model FLOPs per step / step time / the chip's bf16 peak (tools/chips.py), measured on
a ~1.5B Qwen2-sized LM (bf16, text only) at sequence 4096. Decode bandwidth use = bytes a
decode step must read (LM weights + the KV cache) / step time / the chip's HBM bandwidth,
at batch 64. Random weights: speed does not depend on their values.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time

from r1v2_jax.models.config import TextConfig, VisionConfig, VLMConfig


def donated_step(loss_fn, tx):
    """jit of one optimizer step on state (params, opt_state) -> (state, loss), the state
    donated: the benches' plain train step (ours on an accelerator, Tunix's model)."""
    import jax
    import optax

    @functools.partial(jax.jit, donate_argnums=(0,))
    def step(state):
        params, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return step

# Qwen2-1.5B's LM shapes with a token vision tower (unused: text-only batches).
LM_1P5B = VLMConfig(
    vision=VisionConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=1,
                        intermediate_size=64, image_size=28, patch_size=14),
    text=TextConfig(vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                    num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                    head_dim=128, tie_word_embeddings=True),
    param_dtype="bfloat16", dtype="bfloat16", remat_policy="dots_with_no_batch_dims")


def _accelerator(device, what: str):
    from r1v2_jax.tools.chips import chip_for_device_kind

    chip = chip_for_device_kind(device.device_kind)
    if device.platform == "cpu" or chip is None:
        raise RuntimeError(f"{what} needs a GPU/TPU of tools/chips.py, got {device.device_kind!r}")
    return chip


def _median(fn, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_mfu(config: VLMConfig = LM_1P5B, *, batch: int = 4, seq_len: int = 4096,
              attention_impl: str | None = None, warmup: int = 2, iters: int = 5,
              chip=None) -> dict:
    """Train step (fwd + bwd + AdamW) of the LM on one device; needs an accelerator of
    tools/chips.py unless `chip` (a `Chip`: the peak to divide by) is given."""
    import jax
    import jax.numpy as jnp
    import optax

    from r1v2_jax.models import init_params
    from r1v2_jax.tools.flops import train_step_flops
    from r1v2_jax.train.steps import sequence_token_logps

    device = jax.devices()[0]
    chip = chip or _accelerator(device, "MFU")
    impl = attention_impl or ("splash" if device.platform == "tpu" else "cudnn")
    config = config.replace(attention_impl=impl)
    params = jax.jit(lambda r: init_params(config, r))(jax.random.key(0))
    tx = optax.adamw(1e-5, mu_dtype=jnp.float32)
    ids = jax.random.randint(jax.random.key(1), (batch, seq_len), 0, config.text.vocab_size)

    def loss_fn(p):
        return -jnp.mean(sequence_token_logps(config, p, ids, jnp.ones_like(ids)))

    step = donated_step(loss_fn, tx)

    holder = {"state": (params, tx.init(params))}

    def once():
        holder["state"], loss = step(holder["state"])
        jax.block_until_ready(loss)

    seconds = _median(once, warmup, iters)
    flops = train_step_flops(config, batch, seq_len, 0, ("text",))
    return {"device": device.device_kind, "attention_impl": impl, "batch": batch,
            "seq_len": seq_len, "step_s": seconds, "model_flops": flops.model,
            "model_flops_per_s": flops.model / seconds,
            "mfu": flops.model / seconds / chip.bf16_flops, "chip": dataclasses.asdict(chip)}


def bench_decode_bandwidth(config: VLMConfig = LM_1P5B, *, batch: int = 64,
                           cache_len: int = 4096, warmup: int = 3, iters: int = 20,
                           chip=None) -> dict:
    """One KV-cached decode step for `batch` rows (a full cache: every slot valid); `chip`
    as in `bench_mfu`."""
    import jax
    import jax.numpy as jnp

    from r1v2_jax.models import KVCache, init_params
    from r1v2_jax.tools.flops import decode_step_cost
    from r1v2_jax.generate.decode import decode_step_stacked

    device = jax.devices()[0]
    chip = chip or _accelerator(device, "decode bandwidth")
    config = config.replace(attention_impl="xla", remat_policy="none")
    params = jax.jit(lambda r: init_params(config, r))(jax.random.key(0))
    cache = KVCache.init(config, batch, cache_len)
    step = jax.jit(functools.partial(decode_step_stacked, config), donate_argnums=(1,))
    tokens = jnp.zeros((batch,), jnp.int32)
    positions = jnp.full((batch,), cache_len - 1, jnp.int32)
    kv_mask = jnp.ones((batch, cache_len), bool)
    holder = {"cache": cache}

    def once():
        out, holder["cache"] = step(params, holder["cache"], tokens, positions,
                                    jnp.int32(cache_len - 1), kv_mask)
        jax.block_until_ready(out)

    seconds = _median(once, warmup, iters)
    cost = decode_step_cost(config, batch, cache_len, jnp.dtype(config.param_dtype).itemsize,
                            jnp.dtype(config.dtype).itemsize)  # the cache holds config.dtype
    return {"device": device.device_kind, "batch": batch, "cache_len": cache_len,
            "step_s": seconds, "bytes": cost.bytes, "bytes_per_s": cost.bytes / seconds,
            "bandwidth_use": cost.bytes / seconds / chip.hbm_bandwidth,
            "tokens_per_s": batch / seconds}
