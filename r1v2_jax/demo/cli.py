"""`r1v2 demo`: the whole R1V2 pipeline on a tiny model, on CPU, in minutes."""

from __future__ import annotations

import os


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run the toy end-to-end R1V2 pipeline on CPU")
    p.add_argument("--out", default="runs/demo", help="output folder (metrics, plots, summary)")
    p.add_argument("--config", default=None,
                   help="recipe file (default: configs/grpo_demo.py shipped with the package)")
    p.add_argument("--stages", default=None, help="comma-separated subset of the stages, in order")
    p.add_argument("--no-ssb", action="store_true", help="run GRPO without the Selective Sample Buffer only")
    p.add_argument("--no-compare", action="store_true", help="skip the GRPO run without SSB")
    p.add_argument("--compare-objectives", action="store_true",
                   help="also train MPO, DPO and SFT on the same pairs (the paper's Table 3)")
    p.add_argument("--compare-trainable", action="store_true",
                   help="also run GRPO + SSB training each part of demo.trainable_parts with the "
                        "same budget (the paper's Table 4; adds about 4 minutes per part)")
    p.add_argument("--seed", type=int, default=None,
                   help="changes every seed of the run at once (data, model, stages)")
    p.set_defaults(func=main, accepts_overrides=True)  # --config.a.b=value overrides


def default_config_path() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "..", "configs", "grpo_demo.py")


def reseed(cfg, seed: int) -> None:
    """Shifts every seed field of the recipe (data, model init, each stage) by `seed`."""
    def walk(node):
        for key in list(node.keys()):
            value = node[key]
            if hasattr(value, "keys"):
                walk(value)
            elif key == "seed" or key.endswith("_seed"):
                node[key] = int(value) + int(seed)
    walk(cfg)


def main(args) -> int:
    from r1v2_jax.demo.pipeline import STAGES, run_demo
    from r1v2_jax.train.config_loader import (apply_overrides, load_config_file,
                                              split_cli_overrides)

    cfg = load_config_file(args.config or default_config_path())
    if args.seed is not None:
        reseed(cfg, args.seed)
    cfg = apply_overrides(cfg, split_cli_overrides(args.overrides))
    stages = STAGES if not args.stages else tuple(s.strip() for s in args.stages.split(","))
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise SystemExit(f"unknown stage(s) {unknown}; stages are {STAGES}")
    run_demo(cfg, args.out, stages=stages, with_ssb=not args.no_ssb,
             compare_no_ssb=not args.no_compare and not args.no_ssb,
             compare_objectives=args.compare_objectives,
             compare_trainable=args.compare_trainable)
    return 0
