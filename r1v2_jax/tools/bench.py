"""`r1v2 bench`: speed against the peers and the machine, measured side by side in one run.

  (a) the machine's fp32 matmul throughput (JAX, NumPy, PyTorch; the best is the limit;
      matmul_peak.py);
  (b) the shape sweep (bench_shapes.py, bench_sweep.py): the train step (fwd + bwd +
      AdamW, fp32) vs PyTorch transformers and vs Tunix's Qwen2 (text-only points), with
      JAX's model FLOP/s as a fraction of the matmul limit; sampled generation vs
      transformers `generate` and vs Tunix's sampler (text-only points). `--shapes`
      picks points (names, or "train" / "gen");
  (c) a rollout workload with long-tailed stop lengths and images: continuous batching vs
      the static engine vs transformers (bench_rollout.py);
  on a GPU/TPU also train-step MFU and decode HBM-bandwidth use (bench_accel.py).
  `--device gpu` runs the GPU benchmark instead (bench_gpu.py) and writes it to --out.

Targets (docs/benchmarks.md): train step >= 1.3x PyTorch and >= 1.1x Tunix; generation
>= 3x transformers and >= 1.0x Tunix; rollout: continuous >= 2x static.
"""

from __future__ import annotations

import argparse
import json
import sys

QUICK_SHAPES = "t-base,t-tiles1,g-base"
PARTS = ("matmul", "train", "generate", "rollout", "accel")


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmarks against the peers and the machine",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"points {QUICK_SHAPES}, 1 rep, small rollout")
    p.add_argument("--skip", action="append", default=[], choices=PARTS,
                   help="leave a part out (train / generate: the sweep's points of that kind)")
    p.add_argument("--shapes", help="comma-separated sweep points, or 'train' / 'gen' "
                   "(default: all; see r1v2_jax/tools/bench_shapes.py)")
    p.add_argument("--reps", type=int, help="timed repetitions per side and point (default 3)")
    from r1v2_jax.tools.bench_train import DEFAULT_REMAT

    p.add_argument("--remat", default=DEFAULT_REMAT,
                   help=f"remat policy of the JAX train step (default: {DEFAULT_REMAT})")
    p.add_argument("--torch-threads", type=int,
                   help="torch threads of the train points (default: every core; "
                   "generation points use 1)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                   help="gpu: the GPU benchmark (bench_gpu.py) instead of the sweep")
    p.add_argument("--out", default="bench_gpu.json", help="--device gpu: the results file")
    p.add_argument("--json", help="also write every figure to this JSON file")
    p.set_defaults(func=run)


def run_benchmarks(quick: bool, skip: list[str], shapes: str | None = None,
                   reps: int | None = None, remat: str | None = None,
                   torch_threads: int | None = None, log=None) -> dict:
    """remat: the JAX train step's remat policy (None: bench_train.DEFAULT_REMAT)."""
    import jax

    from r1v2_jax.tools.bench_shapes import select
    from r1v2_jax.tools.bench_sweep import run_sweep
    from r1v2_jax.tools.matmul_peak import matmul_flops_per_s

    out: dict = {"device": jax.devices()[0].device_kind, "quick": quick}
    if "matmul" not in skip:
        out["matmul"] = matmul_flops_per_s(n=1024 if quick else 2048, repeats=3 if quick else 5)
    train, gen = select(shapes or (QUICK_SHAPES if quick else None))
    train = () if "train" in skip else train
    gen = () if "generate" in skip else gen
    if train or gen:
        from r1v2_jax.tools.bench_sweep import tunix_available

        if not tunix_available():  # said, not silently dropped: `make bench` installs it
            (log or print)("Tunix is not installed: its columns are left out (install: "
                           "pip install -e '.[bench]' && pip install --no-deps "
                           "google-tunix==0.1.7, or `make bench`)")
        out["sweep"] = run_sweep(train, gen, reps=reps or (1 if quick else 3),
                                 remat_policy=remat, train_torch_threads=torch_threads, log=log)
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
    limit = None
    if "matmul" in r:
        m = r["matmul"]
        limit = m["limit"]
        parts = ", ".join(f"{k} {gf(m[k])}" for k in ("jax", "numpy", "torch") if k in m)
        lines.append(f"fp32 matmul {m['n']}x{m['n']}: {parts}; limit {gf(limit)}")
    if "sweep" in r:
        from r1v2_jax.tools.bench_sweep import format_sweep

        lines.append(format_sweep(r["sweep"], limit))
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
    log = lambda msg, row=None: print(msg, file=sys.stderr, flush=True)
    if args.device == "gpu":
        from r1v2_jax.tools.bench_gpu import format_gpu, run_gpu_bench

        print(format_gpu(run_gpu_bench(args.out, log=log)))
        print(f"written to {args.out}")
        return 0
    results = run_benchmarks(args.quick, args.skip, args.shapes, args.reps, args.remat,
                             args.torch_threads, log=log)
    print(format_results(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0
