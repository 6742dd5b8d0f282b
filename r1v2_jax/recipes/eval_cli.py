"""`r1v2 eval --ckpt DIR --data FILE [--k K] [--out DIR]`: a model folder (`convert to-jax`
output or a run's `final/`) on prompt records: greedy accuracy, avg@k and pass@k with the
rule judge, by answer type, and a per-item JSONL (`rl/evaluate.evaluate_report`, the code
the trainers' held-out evaluation runs).

The model's own tokenizer and chat template are used. `--config RECIPE` takes the data
rules (`data.*`), the judge (`reward.*`) and generation length from a recipe instead of
the defaults below; `--config.a.b=value` overrides it.
"""

from __future__ import annotations

import json

import ml_collections


def default_eval_config() -> ml_collections.ConfigDict:
    """The rule judge (accuracy only) and lenient data rules."""
    return ml_collections.ConfigDict(dict(
        stage="eval", tokenizer="", init=dict(checkpoint=""), model=dict(),
        data=dict(on_invalid="error", max_prompt_tokens=32768, num_heldout=0),
        rollout=dict(max_new_tokens=4096, eval_batch_size=16),
        reward=dict(w_acc=1.0, w_fmt=0.0, w_rm=0.0, rm_standardize=True, rm_clip_tau=1.0,
                    rm_gate="agree", check_timeout_s=5.0, check_batch_timeout_s=120.0,
                    check_workers=4, rm_checkpoint="", rm_calibration=""),
        mesh=dict(ici=dict(data=-1, fsdp=1, tensor=1), dcn=dict())))


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="accuracy / avg@k / pass@k of a model on prompt records",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="JAX model folder (params/ + model_config.json "
                   "+ tokenizer files)")
    p.add_argument("--data", required=True, help="JSONL prompt records (docs/data.md)")
    p.add_argument("--k", type=int, default=0, help="samples per prompt for avg@k / pass@k "
                   "(0: greedy only)")
    p.add_argument("--out", default=None, help="folder for items.jsonl and summary.json")
    p.add_argument("--config", default=None, help="a recipe whose data/reward/rollout apply")
    p.add_argument("--limit", type=int, default=0, help="first N records only (0: all)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=main, accepts_overrides=True)


def main(args) -> int:
    from r1v2_jax.errors import UserError
    from r1v2_jax.recipes import inputs as inp
    from r1v2_jax.recipes import paths
    from r1v2_jax.recipes.cli import load_recipe
    from r1v2_jax.rl.evaluate import evaluate_report
    from r1v2_jax.train.config_loader import apply_overrides, split_cli_overrides

    overrides = split_cli_overrides(args.overrides)
    cfg = (load_recipe(args.config, overrides) if args.config
           else apply_overrides(default_eval_config(), overrides))
    if args.k < 0 or not 0.0 < args.top_p <= 1.0 or not args.temperature >= 0.0 or (
            args.k > 0 and args.temperature == 0.0):
        raise UserError(f"--k must be >= 0, --top-p in (0, 1], --temperature >= 0 (> 0 when "
                        f"--k > 0); got {args.k}, {args.top_p}, {args.temperature}")
    for flag, path in (("--ckpt", args.ckpt), ("--data", args.data)):
        if not paths.exists(path):
            raise UserError(f"{flag} {path}: does not exist")
    cfg.init.checkpoint, cfg.tokenizer = args.ckpt, ""
    mesh, rules = inp.mesh_and_rules(cfg)
    tokenizer, _ = inp.load_recipe_tokenizer(cfg)
    model, params = inp.load_policy(cfg, mesh, rules)
    prompt = inp.prompt_config(model, tokenizer, cfg)
    examples = inp.prompt_examples(cfg, model, tokenizer, prompt, args.data, args.limit or None)
    if not examples:
        raise UserError(f"--data {args.data}: no usable record")
    score = inp.hybrid_scorer(cfg, model, tokenizer, prompt, inp.limits_of(examples))
    report = evaluate_report(model, params, examples, tokenizer=tokenizer, prompt=prompt,
                             score=score, max_new_tokens=int(cfg.rollout.max_new_tokens),
                             batch_size=int(cfg.rollout.eval_batch_size), k=args.k,
                             temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                             out_dir=args.out)
    print(json.dumps(report, indent=1, default=str))
    return 0
