"""`r1v2 train --config configs/<recipe>.py[:smoke] --workdir DIR [--config.a.b=value ...]`.

Runs any stage of the recipe table (`config.stage`: sft, rm, mpo, grpo) the way a pod
runs it: validate the recipe (missing files, a reward weight without a reward model) in a
second, restore the checkpoint straight onto the mesh, load tokenizer and data, train with
automatic resume from WORKDIR/checkpoints, and end by writing WORKDIR/final/.

Overrides use ml_collections `config_flags` syntax and are typed: `--config.ssb.enabled=false`
is a bool, `--config.optim.lr=abc` is refused at once naming the field. A resumed run whose
config differs from WORKDIR/config.json is refused with the differing keys, unless
`--allow-config-change`.
"""

from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a recipe stage (sft, rm, mpo, grpo)",
                              description=__doc__.split("\n\n")[1])
    p.add_argument("--config", required=True, help="recipe file, optionally FILE.py:ARG "
                   "(e.g. configs/grpo_38b.py:smoke)")
    p.add_argument("--workdir", required=True, help="output folder: local, gs://... (checkpoints, "
                   "metrics, final/)")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume even though the config differs from WORKDIR/config.json")
    p.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (GPU clusters)")
    p.add_argument("--num-processes", type=int, default=None)
    p.add_argument("--process-id", type=int, default=None)
    p.set_defaults(func=main, accepts_overrides=True)


def load_recipe(spec: str, overrides):
    from r1v2_jax.train.config_loader import apply_overrides, load_config_file

    return apply_overrides(load_config_file(spec), overrides)


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def check_config_change(workdir: str, cfg, allow: bool) -> None:
    """A resumed run must train what the checkpoint was trained with."""
    from r1v2_jax.recipes import paths
    from r1v2_jax.recipes.validate import RecipeError

    saved_file = paths.join(workdir, "config.json")
    has_ckpt = paths.exists(paths.join(workdir, "checkpoints"))
    if allow or not has_ckpt or not paths.exists(saved_file):
        return
    saved = _flat(json.loads(json.dumps(paths.read_json(saved_file, what="workdir"))))
    now = _flat(json.loads(cfg.to_json_best_effort()))
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k, "<absent>") !=
                     now.get(k, "<absent>"))
    if changed:
        diff = "; ".join(f"{k}: {saved.get(k, '<absent>')!r} -> {now.get(k, '<absent>')!r}"
                         for k in changed[:12])
        raise RecipeError(f"{workdir} holds a run with another config ({diff}); resume with the "
                          f"same config, use a new --workdir, or pass --allow-config-change")


def main(args) -> int:
    from r1v2_jax.recipes import STAGES, inputs_from_config, paths
    from r1v2_jax.recipes.mpo import mpo_stage_config
    from r1v2_jax.recipes.validate import validate_recipe
    from r1v2_jax.train import distributed
    from r1v2_jax.train.config_loader import split_cli_overrides

    cfg = load_recipe(args.config, split_cli_overrides(args.overrides))
    validate_recipe(cfg)
    check_config_change(args.workdir, cfg, args.allow_config_change)
    distributed.initialize(coordinator=args.coordinator, num_processes=args.num_processes,
                           process_id=args.process_id)
    if distributed.is_main_process():
        paths.write_text_atomic(paths.join(args.workdir, "config.json"),
                                cfg.to_json_best_effort(indent=2))
    stage = str(cfg.stage)
    if stage == "mpo":
        cfg = mpo_stage_config(cfg)
    inputs = inputs_from_config(cfg)
    result = STAGES[stage](cfg, inputs, args.workdir)
    summary = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
    print(json.dumps({"stage": stage, "final": result.final_dir, **summary}))
    return 0
