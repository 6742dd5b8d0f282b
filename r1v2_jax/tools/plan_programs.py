"""Ahead-of-time compilation of the GRPO update and the rollout decode step for a mesh.

Inputs are `jax.ShapeDtypeStruct`s carrying their shardings, so nothing is allocated: the
compiler partitions the programs for the mesh and reports, per device, the bytes of the
arguments, outputs and temporaries (`compiled.memory_analysis()`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from r1v2_jax.models import VLM, KVCache, VLMConfig
from r1v2_jax.rl.grpo_step import GRPOBatch, GRPOLossOptions
from r1v2_jax.sharding import (abstract_opt_state, abstract_sharded_params, batch_sharding,
                               cast_abstract, kv_cache_sharding, sharded_grpo_update,
                               shardings_of, traced_with_activation_sharding)
from r1v2_jax.train.masks import split_params


@dataclasses.dataclass(frozen=True)
class ProgramMemory:
    """Bytes per device from XLA's memory analysis of the compiled program."""

    arguments: int
    outputs: int
    aliased: int  # outputs written in place of donated arguments
    temporaries: int

    @property
    def peak(self) -> int:
        return self.arguments + self.outputs - self.aliased + self.temporaries


@dataclasses.dataclass(frozen=True)
class CompiledProgram:
    name: str
    memory: ProgramMemory
    compile_seconds: float
    details: dict[str, Any]


def _compile(name: str, jitted, args, details: dict[str, Any]) -> CompiledProgram:
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    seconds = time.perf_counter() - start
    m = compiled.memory_analysis()
    memory = ProgramMemory(int(m.argument_size_in_bytes), int(m.output_size_in_bytes),
                           int(m.alias_size_in_bytes), int(m.temp_size_in_bytes))
    return CompiledProgram(name, memory, seconds, details)


def _batch_struct(mesh: Mesh, rules, shape, dtype) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding(mesh, rules, shape, 1))


def batch_shards(mesh: Mesh, rules) -> int:
    """How many ways the batch axis is split (product of the mesh axes of "batch")."""
    axes = dict(rules).get("batch") or ()
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    n = 1
    for a in axes:
        n *= mesh.shape[a]
    return n


def compile_grpo_update(config: VLMConfig, opts: GRPOLossOptions, optimizer, mesh: Mesh, rules,
                        *, parts: tuple[str, ...], micro_batch: int, num_micro: int,
                        seq_len: int, tiles_per_sample: int, master_fp32: bool
                        ) -> CompiledProgram:
    """The update of `rl.grpo_step.grpo_update` on [num_micro, micro_batch, seq_len] batches."""
    shards = batch_shards(mesh, rules)
    if micro_batch % shards:
        raise ValueError(f"micro-batch {micro_batch} does not split over the {shards} batch "
                         f"shards of the mesh (data x fsdp): every device needs whole sequences")
    if seq_len <= tiles_per_sample * config.num_image_tokens:
        raise ValueError(f"seq_len {seq_len} cannot hold {tiles_per_sample} tile(s) of "
                         f"{config.num_image_tokens} image tokens plus text")
    params = abstract_sharded_params(config, mesh, rules)
    trainable, frozen = split_params(params, parts)
    compute_dtype = None
    if master_fp32:
        trainable, compute_dtype = cast_abstract(trainable, jnp.float32), config.jnp_param_dtype
    opt_state = abstract_opt_state(optimizer, trainable, mesh)
    m, b, t = num_micro, micro_batch, seq_len
    size, ch = config.vision.image_size, config.vision.num_channels
    s = functools.partial(_batch_struct, mesh, rules)
    batch = GRPOBatch(
        input_ids=s((m, b, t), jnp.int32), attention_mask=s((m, b, t), jnp.int32),
        completion_mask=s((m, b, t - 1), jnp.float32), old_logps=s((m, b, t - 1), jnp.float32),
        advantages=s((m, b), jnp.float32), is_weights=s((m, b), jnp.float32),
        pixel_values=s((m, b * tiles_per_sample, size, size, ch), jnp.float32)
        if tiles_per_sample else None)
    update = sharded_grpo_update(config, opts, optimizer, mesh, rules, shardings_of(trainable),
                                 shardings_of(opt_state), compute_dtype=compute_dtype)
    ref = trainable  # the reference copy has the trainable part's shapes and shardings
    count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
    return _compile("grpo_update", update, (frozen, ref, trainable, opt_state, batch), {
        "trainable_params": count(trainable), "frozen_params": count(frozen),
        "micro_batch": b, "num_micro": m, "seq_len": t, "tiles_per_sample": tiles_per_sample,
        "master_fp32": master_fp32})


def decode_step(config: VLMConfig, params, cache: KVCache, tokens, positions, cache_index,
                kv_mask):
    """One rollout step: the next token of every row (greedy; sampling's cost is a [B, V]
    elementwise pass, negligible next to the model) and the updated cache."""
    out = VLM(config).apply({"params": params}, tokens[:, None], positions=positions[:, None],
                            cache=cache, cache_index=cache_index, kv_mask=kv_mask)
    return jnp.argmax(out.logits[:, 0].astype(jnp.float32), axis=-1).astype(jnp.int32), out.cache


def compile_decode_step(config: VLMConfig, mesh: Mesh, rules, *, batch: int,
                        cache_len: int) -> CompiledProgram:
    """`decode_step` for `batch` rows and a KV cache of `cache_len` slots (in place)."""
    params = abstract_sharded_params(config, mesh, rules)
    tc = config.text
    shape = (tc.num_hidden_layers, batch, cache_len, tc.num_key_value_heads, tc.head_dim)
    cache_sd = jax.ShapeDtypeStruct(shape, config.jnp_dtype,
                                    sharding=kv_cache_sharding(mesh, rules, shape))
    cache = KVCache(cache_sd, cache_sd)
    row = lambda shape, dtype: jax.ShapeDtypeStruct(
        shape, dtype, sharding=batch_sharding(mesh, rules, shape))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    step = jax.jit(traced_with_activation_sharding(functools.partial(decode_step, config), mesh,
                                                   rules), donate_argnums=(1,),
                   out_shardings=(row((batch,), jnp.int32).sharding,
                                  KVCache(cache_sd.sharding, cache_sd.sharding)))
    args = (params, cache, row((batch,), jnp.int32), row((batch,), jnp.int32),
            jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated),
            row((batch, cache_len), jnp.bool_))
    cache_bytes = 2 * cache_sd.size * cache_sd.dtype.itemsize
    return _compile("decode_step", step, args, {"batch": batch, "cache_len": cache_len,
                                                 "kv_cache_bytes_total": cache_bytes})
