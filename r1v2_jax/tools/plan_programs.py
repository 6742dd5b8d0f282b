"""Ahead-of-time compilation of the GRPO update and of the generation engine's own rollout
programs (prefill, decode loop) for a mesh.

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

from r1v2_jax.generate.engine import Plan
from r1v2_jax.models import VLMConfig
from r1v2_jax.rl.grpo_step import GRPOBatch, GRPOLossOptions
from r1v2_jax.rl.grpo_step import sharded_grpo_update
from r1v2_jax.sharding import (abstract_opt_state, abstract_sharded_params, batch_sharding,
                               cast_abstract, kv_cache_sharding,
                               shardings_of)
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


def rollout_plan(config: VLMConfig, mesh: Mesh, rules, *, rows: int, num_samples: int,
                 prompt_len: int, new_tokens: int, tiles_per_prompt: int, slots: int) -> Plan:
    """The generation engine's `Plan` of a rollout: rows / num_samples prompts of
    `prompt_len` tokens, `new_tokens` generated (sampling with top-p), on `mesh`."""
    if rows % num_samples:
        raise ValueError(f"decode rows {rows} must be a multiple of --num-samples {num_samples}")
    if prompt_len <= tiles_per_prompt * config.num_image_tokens or new_tokens < 1:
        raise ValueError(f"prompt length {prompt_len} must hold {tiles_per_prompt} tile(s) of "
                         f"{config.num_image_tokens} image tokens plus text, and the cache "
                         f"length must exceed it")
    prompts = rows // num_samples
    return Plan(config=config, batch=prompts, prompt_len=prompt_len, new_tokens=new_tokens,
                num_tiles=prompts * tiles_per_prompt, num_samples=num_samples, greedy=False,
                top_k=0, use_top_p=True, eos_ids=(0,), pad_id=0, suppress=(),
                slots=slots, mesh=mesh, rules=tuple(rules))


def compile_rollout(plan: Plan) -> tuple[CompiledProgram, CompiledProgram]:
    """Compiles the engine's own prefill and decode programs (`generate.engine`) of `plan`
    on abstract sharded inputs placed as `generate(..., mesh=)` places them."""
    from r1v2_jax.generate.engine import decode_program, prefill_program

    mesh, rules, config = plan.mesh, plan.rules, plan.config
    params = abstract_sharded_params(config, mesh, rules)
    row = lambda shape, dtype: jax.ShapeDtypeStruct(
        shape, dtype, sharding=batch_sharding(mesh, rules, shape))
    b, p, r = plan.batch, plan.prompt_len, plan.batch * plan.num_samples
    size, ch = config.vision.image_size, config.vision.num_channels
    pixels = row((plan.num_tiles, size, size, ch), jnp.float32) if plan.num_tiles else None
    prefill_args = (params, row((b, p), jnp.int32), row((b,), jnp.int32), pixels)
    prefill = prefill_program(plan)
    caches, kv_mask, logits, seen = jax.eval_shape(prefill, *prefill_args)
    kv = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                        sharding=kv_cache_sharding(mesh, rules, x.shape))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    scalar = lambda dtype: jax.ShapeDtypeStruct((), dtype, sharding=replicated)
    decode_args = (params, [(kv(k), kv(v)) for k, v in caches], row(kv_mask.shape, jnp.bool_),
                   row(logits.shape, jnp.float32), None if seen is None else
                   row(seen.shape, jnp.bool_), row((b,), jnp.int32), row((r,), jnp.uint32),
                   row((r,), jnp.uint32), scalar(jnp.uint32), scalar(jnp.float32),
                   scalar(jnp.float32), scalar(jnp.float32), scalar(jnp.int32))
    tc = config.text
    per_row = 2 * tc.num_hidden_layers * tc.num_key_value_heads * tc.head_dim * \
        config.jnp_dtype.itemsize
    details = {"prompts": b, "num_samples": plan.num_samples, "rows": plan.rows,
               "slots": plan.slots, "prompt_len": p, "new_tokens": plan.new_tokens,
               "tiles": plan.num_tiles, "cache_len": p + plan.new_tokens,
               "prompt_kv_bytes_total": b * p * per_row,
               "kv_cache_bytes_total": plan.rows * (p + plan.new_tokens) * per_row}
    return (_compile("prefill", prefill, prefill_args, details),
            _compile("decode", decode_program(plan), decode_args, details))
