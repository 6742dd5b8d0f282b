"""Human-readable text of an `r1v2 plan` report (the dict `tools.plan.plan` returns)."""

from __future__ import annotations


def human_bytes(x: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f} B"


def _mesh(sizes: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sizes.items())


def format_report(r: dict) -> str:
    chip = r["chip"]
    lines = [f"model {r['model']}: {r['params'] / 1e9:.2f}B params, {r['param_dtype']} params, "
             f"{r['dtype']} compute, remat={r['remat_policy']}",
             f"mesh {_mesh(r['mesh'])} ({r['devices']} devices); chip {chip['name']}: "
             f"{chip['bf16_flops'] / 1e12:.0f} TFLOP/s bf16, {human_bytes(chip['hbm_bytes'])} "
             f"HBM, {chip['hbm_bandwidth'] / 1e9:.0f} GB/s"]
    if "grpo_update" in r["programs"]:
        lines += _train_lines(r, r["programs"]["grpo_update"])
    if "decode" in r["programs"]:
        lines += _rollout_lines(r["programs"]["prefill"], r["programs"]["decode"])
    attention = ("a blockwise stand-in for the flash kernels ([512, T] scores)"
                 if r["attention"] == "flash" else "the 'xla' implementation ([T, T] scores)")
    lines += ["", f"Bytes are XLA CPU-backend estimates; training attention planned with "
              f"{attention}."]
    return "\n".join(lines)


def _train_lines(r: dict, g: dict) -> list[str]:
    master = ", fp32 master weights" if g["master_fp32"] else ""
    return ["", f"GRPO update, trainable={r['trainable']} ({g['trainable_params'] / 1e6:.1f}M "
            f"params{master}): micro-batch {g['micro_batch']} x {g['seq_len']} tokens, "
            f"{g['tiles_per_sample']} tile(s)/sequence",
            *_memory_lines(g),
            f"  FLOPs per micro-batch: model {g['model_flops']:.3e}, with remat "
            f"{g['hardware_flops']:.3e}; at 100% of peak {g['seconds_at_peak']:.2f} s "
            f"({g['tokens_per_s_per_device_at_peak']:.0f} tokens/s/device)",
            f"  compiled in {g['compile_s']:.1f} s"]


def _rollout_lines(p: dict, d: dict) -> list[str]:
    bound = max(d["seconds_compute_bound"], d["seconds_memory_bound"])
    kind = "HBM" if d["seconds_memory_bound"] > d["seconds_compute_bound"] else "compute"
    batching = (f"continuous batching on {d['slots']} slots" if d["slots"]
                else f"static batch of {d['rows']} rows")
    return ["", f"rollout (the engine's programs), mesh {_mesh(d['mesh'])}: {d['prompts']} "
            f"prompts x {d['num_samples']} samples, {d['prompt_len']} prompt + "
            f"{d['new_tokens']} new tokens, {d['tiles']} tile(s)",
            f"prefill: prompt KV {human_bytes(p['prompt_kv_bytes_total'])} in all",
            *_memory_lines(p),
            f"  compiled in {p['compile_s']:.1f} s",
            f"decode loop, {batching}: KV cache {human_bytes(d['kv_cache_bytes_total'])} in all",
            *_memory_lines(d),
            f"  per step: {d['flops']:.3e} FLOPs, {human_bytes(d['bytes_read'])} read; bound "
            f"{1e3 * bound:.2f} ms ({kind}-bound) = {d['tokens_per_s_bound']:.0f} tokens/s",
            f"  compiled in {d['compile_s']:.1f} s"]


def _memory_lines(p: dict) -> list[str]:
    verdict = "fits" if p["fits"] else "DOES NOT FIT"
    return [f"  per device: arguments {human_bytes(p['arguments'])}, outputs "
            f"{human_bytes(p['outputs'])} ({human_bytes(p['aliased'])} in place), temporaries "
            f"{human_bytes(p['temporaries'])}",
            f"  peak {human_bytes(p['peak'])} = {100 * p['hbm_fraction']:.0f}% of HBM: {verdict}"]
