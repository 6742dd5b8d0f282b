"""`r1v2 plan`: will a model's GRPO step and rollout fit a mesh, and how fast can it be?

Compiles ahead of time, on simulated CPU devices, the GRPO update and the generation
engine's own rollout programs (prefill, and the decode loop: static or continuous
batching) of a config for a target mesh (nothing is allocated) and prints per-device bytes
from XLA's memory analysis, the FLOPs of a step and the time the chip's peak implies:

    r1v2 plan --config configs/grpo_38b.py --mesh data=1,fsdp=8,tensor=8 --chip v5p
    r1v2 plan --model 38b --mesh fsdp=8 --chip h100 --trainable llm+adapter --seq-len 32768

Caveats (printed too): the programs are compiled by XLA's CPU backend, so temporaries
follow its fusion and scheduling, not the TPU/GPU compiler's. The flash kernels (cudnn,
splash) cannot be compiled for CPU: training attention is planned with a blockwise
stand-in of the same memory shape (`--attention flash`, default) or with the plain XLA
path that materialises [T, T] scores (`--attention xla`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from typing import Any

MODELS = ("38b",)


def register(subparsers) -> None:
    p = subparsers.add_parser("plan", help="per-device memory / FLOPs of the GRPO step and "
                              "rollout on a mesh, compiled ahead of time on simulated devices",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="recipe file with a `model` (and optional grpo, optim, "
                     "train, rollout, mesh) section")
    src.add_argument("--model", choices=MODELS, help="a built-in model instead of --config "
                     "(38b: R1V2-38B, bf16 params and compute, full remat)")
    p.add_argument("--mesh", help="ICI axis sizes, e.g. data=1,fsdp=8,tensor=8 (default: the "
                   "config's mesh.ici)")
    p.add_argument("--devices", type=int, help="simulated devices (default: the mesh's product)")
    p.add_argument("--chip", default="v5p", help="v5p | v5e | h100 | h200 (default v5p)")
    p.add_argument("--seq-len", type=int, default=8192, help="tokens per training sequence "
                   "(prompt with image tokens + completion); also the rollout cache length")
    p.add_argument("--trainable", help="adapter | llm+adapter | vit+adapter | all (default: "
                   "the config's train.trainable, else adapter)")
    p.add_argument("--micro-batch", type=int, help="sequences per micro-batch, global "
                   "(default: one per batch shard)")
    p.add_argument("--tiles", type=int, default=1, help="image tiles per sequence (default 1)")
    p.add_argument("--master-fp32", action=argparse.BooleanOptionalAction, default=None,
                   help="fp32 master weights for bf16 params (default: optim.master_fp32, "
                   "else on)")
    p.add_argument("--remat", help="override the config's remat_policy")
    p.add_argument("--decode-batch", type=int, default=64, help="rollout rows: prompts x "
                   "samples (default 64)")
    p.add_argument("--num-samples", type=int, default=8, help="samples per prompt, sharing "
                   "one prefill (default 8)")
    p.add_argument("--prompt-len", type=int, default=1024, help="rollout prompt tokens, image "
                   "tokens included (default 1024); the rest of --seq-len is generated")
    p.add_argument("--slots", type=int, default=0, help="continuous batching on this many "
                   "decode slots (default 0: one static batch of --decode-batch rows)")
    p.add_argument("--decode-mesh", help="mesh for the rollout programs (default: --mesh)")
    p.add_argument("--attention", choices=("flash", "xla"), default="flash",
                   help="attention memory model: flash (default; blockwise stand-in for the "
                   "cudnn/splash kernels, [block, T] scores) or xla ([T, T] scores)")
    p.add_argument("--skip-decode", action="store_true", help="plan the GRPO update only")
    p.add_argument("--skip-train", action="store_true", help="plan the rollout only")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.set_defaults(func=run)


def _start_simulated_devices(count: int) -> None:
    """Must run before JAX initialises a backend."""
    import jax

    try:
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError as err:
        if jax.device_count() != count:
            raise RuntimeError(f"plan needs {count} simulated devices, but JAX already started "
                               f"with {jax.device_count()}: run it in a fresh process") from err


def _load(args):
    """(VLMConfig, recipe ConfigDict or None) from --config / --model."""
    from r1v2_jax.models import VLMConfig

    if args.model == "38b":
        config, recipe = VLMConfig(param_dtype="bfloat16", dtype="bfloat16",
                                   remat_policy="full"), None
    else:
        from r1v2_jax.train.config_loader import load_config_file

        recipe = load_config_file(args.config)
        if "model" not in recipe:
            raise ValueError(f"{args.config}: no `model` section")
        config = VLMConfig.from_dict(recipe.model)
    if args.remat:
        config = config.replace(remat_policy=args.remat)
    if config.attention_impl != "xla":  # flash kernels do not compile for CPU
        config = config.replace(attention_impl="xla")
    return config, recipe


def _section(recipe, name: str):
    return recipe[name] if recipe is not None and name in recipe else None


def _optimizer(recipe):
    import ml_collections

    from r1v2_jax.train.optimizer import make_optimizer

    optim = _section(recipe, "optim")
    if optim is None:  # the values do not change the plan, only the state's layout does
        optim = ml_collections.ConfigDict(dict(lr=1e-6, warmup_steps=0, schedule="constant",
                                               total_steps=1, final_lr_ratio=0.1, clip_norm=1.0,
                                               b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0))
    return make_optimizer(optim)


def _mesh_sizes(args, recipe) -> dict[str, int]:
    from r1v2_jax.sharding import parse_axis_sizes

    if args.mesh:
        return parse_axis_sizes(args.mesh)
    mesh = _section(recipe, "mesh")
    if mesh is None or "ici" not in mesh:
        raise ValueError("give --mesh (the config has no mesh.ici)")
    return dict(mesh.ici)


@dataclasses.dataclass(frozen=True)
class PlanSetup:
    """Everything `plan` resolved from the arguments and the recipe."""

    config: Any
    recipe: Any
    sizes: dict
    devices: int
    chip: Any
    rules: tuple
    trainable: str
    opts: Any
    master_fp32: bool
    micro_batch: int | None


def resolve(args) -> PlanSetup:
    """Reads the config and settles every choice; touches no JAX device."""
    from r1v2_jax.rl.grpo_step import GRPOLossOptions
    from r1v2_jax.sharding import DEFAULT_RULES, rules_from_config
    from r1v2_jax.tools.chips import get_chip

    config, recipe = _load(args)
    sizes = _mesh_sizes(args, recipe)
    devices = args.devices or math.prod(sizes.values())
    if devices < 1:
        raise ValueError(f"mesh {sizes} has a -1 axis: give --devices")
    sharding = _section(recipe, "sharding")
    rules = rules_from_config(sharding.rules) if sharding and "rules" in sharding else DEFAULT_RULES
    train = _section(recipe, "train")
    trainable = args.trainable or (train.trainable if train is not None else "adapter")
    grpo, rollout = _section(recipe, "grpo"), _section(recipe, "rollout")
    opts = GRPOLossOptions()
    if grpo is not None:
        opts = GRPOLossOptions.from_config(grpo, rollout.temperature if rollout else 1.0,
                                           rollout.max_new_tokens if rollout else args.seq_len)
    optim = _section(recipe, "optim")
    master = args.master_fp32
    if master is None:
        master = bool(optim.master_fp32) if optim is not None and "master_fp32" in optim else True
    return PlanSetup(config, recipe, sizes, devices, get_chip(args.chip), rules, trainable, opts,
                     master and config.param_dtype != "float32", args.micro_batch)


def plan(args) -> dict:
    """Runs the plan; returns the figures as a JSON-able dict."""
    s = resolve(args)
    _start_simulated_devices(s.devices)

    from r1v2_jax.models import count_params
    from r1v2_jax.sharding import make_mesh

    report = {"model": args.model or args.config, "params": count_params(s.config)["total"],
              "param_dtype": s.config.param_dtype, "dtype": s.config.dtype,
              "remat_policy": s.config.remat_policy, "devices": s.devices,
              "chip": dataclasses.asdict(s.chip), "trainable": s.trainable,
              "attention": args.attention, "programs": {}}
    mesh = make_mesh(s.sizes)
    report["mesh"] = dict(mesh.shape)
    if not args.skip_train:
        report["programs"]["grpo_update"] = _plan_train(args, s, mesh)
    if not args.skip_decode:
        if args.decode_mesh:
            mesh = _decode_mesh(args.decode_mesh, s.devices)
        report["programs"].update(_plan_rollout(args, s, mesh))
    return report


def _decode_mesh(text: str, devices: int):
    import jax

    from r1v2_jax.sharding import make_mesh, parse_axis_sizes, resolve_axis_sizes

    sizes = parse_axis_sizes(text)
    if -1 in sizes.values():
        sizes = dict(zip(("data", "fsdp", "tensor"), resolve_axis_sizes(sizes, devices)))
    n = math.prod(sizes.values())
    if n > devices:
        raise ValueError(f"--decode-mesh {text} needs {n} devices; --devices is {devices}")
    return make_mesh(sizes, devices=jax.devices()[:n])


def _plan_train(args, s: PlanSetup, mesh) -> dict:
    from r1v2_jax.tools import flops as F
    from r1v2_jax.tools.plan_programs import batch_shards, compile_grpo_update
    from r1v2_jax.train.masks import trainable_parts

    parts = trainable_parts(s.trainable)
    micro = s.micro_batch or batch_shards(mesh, s.rules)
    with _attention_model(args.attention):
        program = compile_grpo_update(s.config, s.opts, _optimizer(s.recipe), mesh, s.rules,
                                      parts=parts, micro_batch=micro, num_micro=1,
                                      seq_len=args.seq_len, tiles_per_sample=args.tiles,
                                      master_fp32=s.master_fp32)
    step = F.train_step_flops(s.config, micro, args.seq_len, micro * args.tiles, parts,
                              reference_forward=s.opts.beta != 0.0)
    seconds = step.hardware / mesh.size / s.chip.bf16_flops
    tokens = micro * args.seq_len
    return {**_memory(program, s.chip), "compile_s": program.compile_seconds, **program.details,
            "tokens": tokens, "model_flops": step.model, "hardware_flops": step.hardware,
            "seconds_at_peak": seconds, "tokens_per_s_per_device_at_peak":
                tokens / seconds / mesh.size}


def _plan_rollout(args, s: PlanSetup, mesh) -> dict:
    from r1v2_jax.tools import flops as F
    from r1v2_jax.tools.plan_programs import compile_rollout, rollout_plan

    config = s.config.replace(remat_policy="none")  # no backward pass: nothing to remat
    plan = rollout_plan(config, mesh, s.rules, rows=args.decode_batch,
                        num_samples=args.num_samples, prompt_len=args.prompt_len,
                        new_tokens=args.seq_len - args.prompt_len, tiles_per_prompt=args.tiles,
                        slots=args.slots)
    prefill, decode = compile_rollout(plan)
    # one decode step of every decode row against full caches: the loop's per-token cost
    cost = F.decode_step_cost(config, plan.rows, args.seq_len,
                              param_bytes=config.jnp_param_dtype.itemsize,
                              cache_bytes=config.jnp_dtype.itemsize)
    compute_s = cost.flops / mesh.size / s.chip.bf16_flops
    memory_s = cost.bytes / mesh.size / s.chip.hbm_bandwidth
    out = {"prefill": {**_memory(prefill, s.chip), "compile_s": prefill.compile_seconds,
                       **prefill.details, "mesh": dict(mesh.shape)},
           "decode": {**_memory(decode, s.chip), "compile_s": decode.compile_seconds,
                      **decode.details, "mesh": dict(mesh.shape), "flops": cost.flops,
                      "bytes_read": cost.bytes, "seconds_compute_bound": compute_s,
                      "seconds_memory_bound": memory_s,
                      "tokens_per_s_bound": plan.rows / max(compute_s, memory_s)}}
    return out


def _attention_model(name: str):
    import contextlib

    from r1v2_jax.tools.blockwise_attention import flash_memory_model

    return flash_memory_model() if name == "flash" else contextlib.nullcontext()


def _memory(program, chip) -> dict:
    m = program.memory
    return {"arguments": m.arguments, "outputs": m.outputs, "aliased": m.aliased,
            "temporaries": m.temporaries, "peak": m.peak, "hbm_fraction": m.peak / chip.hbm_bytes,
            "fits": m.peak <= chip.hbm_bytes}


def run(args) -> int:
    try:
        report = plan(args)
    except ValueError as err:
        print(f"r1v2 plan: {err}", file=sys.stderr)
        return 2
    from r1v2_jax.tools.plan_report import format_report

    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0
