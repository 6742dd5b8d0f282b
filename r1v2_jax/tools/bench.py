"""`r1v2 bench`: speed against the peers and the machine, measured side by side in one run.

  (a) VLM train step (fwd + bwd + AdamW, fp32, small config): JAX vs PyTorch transformers
      `InternVLForConditionalGeneration`, same model, batch and threads (bench_train.py);
  (b) the machine's fp32 matmul throughput (JAX, NumPy, PyTorch; the best is the limit) and
      the train step's model FLOPs per second as a fraction of it (matmul_peak.py);
  (c) sampled generation vs transformers `generate` (r1v2_jax.generate.bench);
  (d) a rollout workload with long-tailed stop lengths and images: continuous batching vs
      the static engine vs transformers (bench_rollout.py);
  on a GPU/TPU also train-step MFU and decode HBM-bandwidth use (bench_accel.py).

Targets (docs/benchmarks.md): train step >= 1.3x PyTorch; >= 0.8 of the matmul limit;
generation >= 3x transformers; rollout: continuous >= 2x static.
"""

from __future__ import annotations

import argparse
import importlib.util
import json

TRAIN_SPEEDUP_TARGET = 1.3
MATMUL_FRACTION_TARGET = 0.8


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmarks against PyTorch and the machine",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller shapes, fewer iterations")
    p.add_argument("--skip", action="append", default=[],
                   choices=("train", "matmul", "generate", "rollout", "accel"),
                   help="leave a part out")
    p.add_argument("--iters", type=int, help="timed train steps (default 5, quick 3)")
    from r1v2_jax.tools.bench_train import DEFAULT_REMAT

    p.add_argument("--remat", default=DEFAULT_REMAT,
                   help=f"remat policy of the JAX train step (default: {DEFAULT_REMAT})")
    p.add_argument("--json", help="also write every figure to this JSON file")
    p.set_defaults(func=run)


def run_benchmarks(quick: bool, skip: list[str], iters: int | None = None,
                   remat: str | None = None) -> dict:
    """remat: the JAX train step's remat policy (None: bench_train.DEFAULT_REMAT)."""
    import jax

    from r1v2_jax.tools.bench_train import (DEFAULT_REMAT, QUICK_MODEL, TrainBenchModel,
                                            bench_train_step)
    from r1v2_jax.tools.matmul_peak import matmul_flops_per_s

    out: dict = {"device": jax.devices()[0].device_kind, "quick": quick}
    if "matmul" not in skip:
        out["matmul"] = matmul_flops_per_s(n=1024 if quick else 2048, repeats=3 if quick else 5)
    if "train" not in skip:
        shapes = (dict(spec=QUICK_MODEL, batch=4, seq_len=256) if quick
                  else dict(spec=TrainBenchModel(), batch=8, seq_len=512))
        out["train"] = bench_train_step(**shapes, warmup=1 if quick else 2,
                                        iters=iters or (3 if quick else 5),
                                        remat_policy=remat or DEFAULT_REMAT)
        if "matmul" in out:
            out["train"]["matmul_fraction"] = out["train"]["jax_flops_per_s"] / out["matmul"]["limit"]
    if "generate" not in skip and importlib.util.find_spec("r1v2_jax.generate.bench"):
        from r1v2_jax.generate.bench import bench_generation

        out["generate"] = (bench_generation(batch=8, new_tokens=32, repeats=1) if quick
                           else bench_generation())
    if "rollout" not in skip:
        from r1v2_jax.tools.bench_rollout import RolloutWorkload, bench_rollout

        out["rollout"] = bench_rollout(RolloutWorkload(prompts=8, max_new_tokens=256, slots=16,
                                                       hf_prompts=2) if quick
                                       else RolloutWorkload())
    if "accel" not in skip and jax.devices()[0].platform != "cpu":
        from r1v2_jax.tools.bench_accel import bench_decode_bandwidth, bench_mfu

        out["mfu"] = bench_mfu(iters=3 if quick else 5)
        out["decode_bandwidth"] = bench_decode_bandwidth()
    return out


def format_results(r: dict) -> str:
    gf = lambda x: f"{x / 1e9:.1f} GFLOP/s"
    lines = [f"device: {r['device']}{' (quick)' if r['quick'] else ''}"]
    if "matmul" in r:
        m = r["matmul"]
        parts = ", ".join(f"{k} {gf(m[k])}" for k in ("jax", "numpy", "torch") if k in m)
        lines.append(f"fp32 matmul {m['n']}x{m['n']}: {parts}; limit {gf(m['limit'])}")
    if "train" in r:
        t = r["train"]
        ok = t["speedup"] >= TRAIN_SPEEDUP_TARGET
        lines += [f"train step (fwd+bwd+AdamW, fp32), {t['params'] / 1e6:.1f}M params, batch "
                  f"{t['batch']} x {t['seq_len']} tokens, 1 tile/sample, {t['threads']} threads, "
                  f"JAX remat {t.get('remat_policy', 'none')}:",
                  f"  JAX {t['jax_step_s'] * 1e3:.0f} ms, PyTorch {t['torch_step_s'] * 1e3:.0f} ms"
                  f" -> {t['speedup']:.2f}x (target >= {TRAIN_SPEEDUP_TARGET}x: "
                  f"{'met' if ok else 'NOT met'})",
                  f"  first-step loss: JAX {t['first_loss_jax']:.6f}, PyTorch "
                  f"{t['first_loss_torch']:.6f} (same model, same batch)",
                  f"  model FLOPs {t['model_flops'] / 1e9:.1f} G/step: JAX {gf(t['jax_flops_per_s'])},"
                  f" PyTorch {gf(t['torch_flops_per_s'])}"]
        if "matmul_fraction" in t:
            ok = t["matmul_fraction"] >= MATMUL_FRACTION_TARGET
            lines.append(f"  JAX at {t['matmul_fraction']:.2f} of the matmul limit (target >= "
                         f"{MATMUL_FRACTION_TARGET}: {'met' if ok else 'NOT met'})")
    if "generate" in r:
        g = r["generate"]
        lines.append(f"generation, batch {g['batch']}, {g['new_tokens']} new tokens: JAX "
                     f"{g['jax_tokens_per_s']:.0f} tok/s, transformers {g['torch_tokens_per_s']:.0f}"
                     f" tok/s -> {g['speedup']:.2f}x (target >= {g['target_speedup']}x: "
                     f"{'met' if g['meets_target'] else 'NOT met'})")
        s = g.get("shared_prefill")
        if s:
            lines.append(f"  {s['num_samples']} samples/prompt: prefilled rows {s['prefill_rows_shared']}"
                         f" shared vs {s['prefill_rows_unshared']} repeated; same tokens: "
                         f"{s['same_tokens']}")
    if "rollout" in r:
        from r1v2_jax.tools.bench_rollout import format_rollout

        lines.append(format_rollout(r["rollout"]))
    if "mfu" in r:
        lines.append(f"MFU ({r['mfu']['attention_impl']}, seq {r['mfu']['seq_len']}): "
                     f"{100 * r['mfu']['mfu']:.1f}% (target >= 50%)")
    if "decode_bandwidth" in r:
        d = r["decode_bandwidth"]
        lines.append(f"decode batch {d['batch']}: {100 * d['bandwidth_use']:.1f}% of HBM bandwidth"
                     f" (target >= 60%), {d['tokens_per_s']:.0f} tok/s")
    return "\n".join(lines)


def run(args) -> int:
    results = run_benchmarks(args.quick, args.skip, args.iters, args.remat)
    print(format_results(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0
