"""`r1v2 plan`: will a model's GRPO step and rollout fit a mesh, and how fast can it be?

Compiles ahead of time, on simulated CPU devices, the GRPO update and the rollout decode
step of a config for a target mesh (nothing is allocated) and prints per-device bytes
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
    p.add_argument("--decode-batch", type=int, default=64, help="rollout rows (default 64)")
    p.add_argument("--decode-mesh", help="mesh for the decode step (default: --mesh)")
    p.add_argument("--attention", choices=("flash", "xla"), default="flash",
                   help="attention memory model: flash (default; blockwise stand-in for the "
                   "cudnn/splash kernels, [block, T] scores) or xla ([T, T] scores)")
    p.add_argument("--skip-decode", action="store_true", help="plan the GRPO update only")
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


def plan(args) -> dict:
    """Runs the plan; returns the figures as a JSON-able dict."""
    config, recipe = _load(args)
    sizes = _mesh_sizes(args, recipe)
    devices = args.devices or math.prod(sizes.values())
    if devices < 1:
        raise ValueError(f"mesh {sizes} has a -1 axis: give --devices")
    _start_simulated_devices(devices)

    from r1v2_jax.models import count_params
    from r1v2_jax.rl.grpo_step import GRPOLossOptions
    from r1v2_jax.sharding import DEFAULT_RULES, make_mesh, parse_axis_sizes, rules_from_config
    from r1v2_jax.tools import flops as F
    from r1v2_jax.tools.chips import get_chip
    from r1v2_jax.tools.plan_programs import (batch_shards, compile_decode_step,
                                              compile_grpo_update)
    from r1v2_jax.train.masks import trainable_parts

    chip = get_chip(args.chip)
    sharding = _section(recipe, "sharding")
    rules = rules_from_config(sharding.rules) if sharding and "rules" in sharding else DEFAULT_RULES
    mesh = make_mesh(sizes)
    train = _section(recipe, "train")
    trainable = args.trainable or (train.trainable if train is not None else "adapter")
    parts = trainable_parts(trainable)
    grpo = _section(recipe, "grpo")
    opts = GRPOLossOptions()
    if grpo is not None:
        rollout = _section(recipe, "rollout")
        opts = GRPOLossOptions.from_config(grpo, rollout.temperature if rollout else 1.0,
                                           rollout.max_new_tokens if rollout else args.seq_len)
    optim = _section(recipe, "optim")
    master = args.master_fp32
    if master is None:
        master = bool(optim.master_fp32) if optim is not None and "master_fp32" in optim else True
    master = master and config.param_dtype != "float32"
    micro = args.micro_batch or batch_shards(mesh, rules)
    tokens = micro * args.seq_len
    report = {"model": args.model or args.config, "params": count_params(config)["total"],
              "param_dtype": config.param_dtype, "dtype": config.dtype,
              "remat_policy": config.remat_policy, "mesh": dict(mesh.shape), "devices": devices,
              "chip": dataclasses.asdict(chip), "trainable": trainable,
              "attention": args.attention, "programs": {}}

    with _attention_model(args.attention):
        program = compile_grpo_update(config, opts, _optimizer(recipe), mesh, rules,
                                      parts=parts, micro_batch=micro, num_micro=1,
                                      seq_len=args.seq_len, tiles_per_sample=args.tiles,
                                      master_fp32=master)
    step = F.train_step_flops(config, micro, args.seq_len, micro * args.tiles, parts,
                              reference_forward=opts.beta != 0.0)
    per_device = step.hardware / devices
    report["programs"]["grpo_update"] = {
        **_memory(program, chip), "compile_s": program.compile_seconds, **program.details,
        "tokens": tokens, "model_flops": step.model, "hardware_flops": step.hardware,
        "seconds_at_peak": per_device / chip.bf16_flops,
        "model_tokens_per_s_at_peak": tokens / (per_device / chip.bf16_flops) / devices}

    if not args.skip_decode:
        dsizes = parse_axis_sizes(args.decode_mesh) if args.decode_mesh else sizes
        dmesh = make_mesh(dsizes) if args.decode_mesh else mesh
        program = compile_decode_step(config.replace(remat_policy="none"), dmesh, rules,
                                      batch=args.decode_batch, cache_len=args.seq_len)
        cost = F.decode_step_cost(config, args.decode_batch, args.seq_len,
                                  param_bytes=config.jnp_param_dtype.itemsize,
                                  cache_bytes=config.jnp_dtype.itemsize)
        n = math.prod(dsizes.values()) if -1 not in dsizes.values() else devices
        compute_s = cost.flops / n / chip.bf16_flops
        memory_s = cost.bytes / n / chip.hbm_bandwidth
        report["programs"]["decode_step"] = {
            **_memory(program, chip), "compile_s": program.compile_seconds, **program.details,
            "mesh": dict(dmesh.shape), "flops": cost.flops, "bytes_read": cost.bytes,
            "seconds_compute_bound": compute_s, "seconds_memory_bound": memory_s,
            "tokens_per_s_bound": args.decode_batch / max(compute_s, memory_s)}
    return report


def _attention_model(name: str):
    import contextlib

    from r1v2_jax.tools.blockwise_attention import flash_memory_model

    return flash_memory_model() if name == "flash" else contextlib.nullcontext()


def _memory(program, chip) -> dict:
    m = program.memory
    return {"arguments": m.arguments, "outputs": m.outputs, "aliased": m.aliased,
            "temporaries": m.temporaries, "peak": m.peak, "hbm_fraction": m.peak / chip.hbm_bytes,
            "fits": m.peak <= chip.hbm_bytes}


def format_report(r: dict) -> str:
    gb = _human_bytes
    chip = r["chip"]
    mesh = " ".join(f"{k}={v}" for k, v in r["mesh"].items())
    lines = [f"model {r['model']}: {r['params'] / 1e9:.2f}B params, {r['param_dtype']} params, "
             f"{r['dtype']} compute, remat={r['remat_policy']}",
             f"mesh {mesh} ({r['devices']} devices); chip {chip['name']}: "
             f"{chip['bf16_flops'] / 1e12:.0f} TFLOP/s bf16, {gb(chip['hbm_bytes'])} HBM, "
             f"{chip['hbm_bandwidth'] / 1e9:.0f} GB/s"]
    g = r["programs"]["grpo_update"]
    lines += ["", f"GRPO update, trainable={r['trainable']} ({g['trainable_params'] / 1e6:.1f}M "
              f"params{', fp32 master weights' if g['master_fp32'] else ''}): micro-batch "
              f"{g['micro_batch']} x {g['seq_len']} tokens, {g['tiles_per_sample']} tile(s)/sequence"]
    lines += _memory_lines(g, gb)
    lines += [f"  FLOPs per micro-batch: model {g['model_flops']:.3e}, with remat "
              f"{g['hardware_flops']:.3e}; at 100% of peak {g['seconds_at_peak']:.2f} s "
              f"({g['model_tokens_per_s_at_peak']:.0f} tokens/s/device)",
              f"  compiled in {g['compile_s']:.1f} s"]
    d = r["programs"].get("decode_step")
    if d:
        mesh = " ".join(f"{k}={v}" for k, v in d["mesh"].items())
        lines += ["", f"rollout decode step: {d['batch']} rows, KV cache of {d['cache_len']} slots "
                  f"({gb(d['kv_cache_bytes_total'])} in all), mesh {mesh}"]
        lines += _memory_lines(d, gb)
        lines += [f"  per step: {d['flops']:.3e} FLOPs, {gb(d['bytes_read'])} read; bound "
                  f"{1e3 * max(d['seconds_compute_bound'], d['seconds_memory_bound']):.2f} ms "
                  f"({'HBM' if d['seconds_memory_bound'] > d['seconds_compute_bound'] else 'compute'}"
                  f"-bound) = {d['tokens_per_s_bound']:.0f} tokens/s",
                  f"  compiled in {d['compile_s']:.1f} s"]
    attention = ("a blockwise stand-in for the flash kernels ([512, T] scores)"
                 if r["attention"] == "flash" else "the 'xla' implementation ([T, T] scores)")
    lines += ["", f"Bytes are XLA CPU-backend estimates; training attention planned with "
              f"{attention}."]
    return "\n".join(lines)


def _human_bytes(x: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f} B"


def _memory_lines(p: dict, gb) -> list[str]:
    verdict = "fits" if p["fits"] else "DOES NOT FIT"
    return [f"  per device: arguments {gb(p['arguments'])}, outputs {gb(p['outputs'])} "
            f"({gb(p['aliased'])} in place), temporaries {gb(p['temporaries'])}",
            f"  peak {gb(p['peak'])} = {100 * p['hbm_fraction']:.0f}% of HBM: {verdict}"]


def run(args) -> int:
    try:
        report = plan(args)
    except ValueError as err:
        print(f"r1v2 plan: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0
