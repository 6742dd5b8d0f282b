"""`r1v2 filter-prompts`: the SSB's offline use (R1V2 sec. 3.3.2): k rollouts per prompt
with the starting policy; prompts whose group is all-correct or all-wrong are dropped
(they would give zero advantages), the rest are written to a new JSONL file.

The options and the output path are checked before the policy is loaded or any rollout
runs, so a bad --output fails in a second, not after hours of sampling."""

from __future__ import annotations

import os
import tempfile

from r1v2_jax.errors import UserError


def check_paths(input_path: str, output_path: str) -> None:
    """UserError unless `input_path` is a file and `output_path` can be written (its folder
    exists and accepts a new file, it is not a folder, not the input)."""
    if not os.path.isfile(input_path):
        raise UserError(f"--input {input_path}: no such file")
    out = os.path.abspath(output_path)
    folder = os.path.dirname(out)
    if os.path.isdir(out):
        raise UserError(f"--output {output_path}: is a folder; give a file path")
    if not os.path.isdir(folder):
        raise UserError(f"--output {output_path}: folder {folder} does not exist")
    if os.path.exists(out) and os.path.samefile(out, input_path):
        raise UserError(f"--output {output_path}: is the input file; write elsewhere")
    try:  # the probe the atomic write will need: a new file in the same folder
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".tmp_probe_")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UserError(f"--output {output_path}: cannot write in {folder} ({err.strerror})") from None


def register(subparsers) -> None:
    p = subparsers.add_parser("filter-prompts", help="drop prompts the policy always or never solves")
    p.add_argument("--config", required=True, help="a GRPO recipe (policy, tokenizer, rollout settings)")
    p.add_argument("--input", required=True, help="JSONL prompt records")
    p.add_argument("--output", required=True, help="filtered JSONL (written atomically)")
    p.add_argument("-k", type=int, default=8, help="rollouts per prompt")
    p.add_argument("--batch-prompts", type=int, default=8)
    p.set_defaults(func=main, accepts_overrides=True)  # --config.a.b=value overrides


def main(args) -> int:
    import json

    from r1v2_jax.rl.prompt_filter import filter_groups, read_jsonl, write_jsonl
    from r1v2_jax.rl.rollout import SamplingOptions, rollout
    from r1v2_jax.rl.scoring import make_scorer
    from r1v2_jax.recipes import inputs as inp
    from r1v2_jax.recipes.cli import load_recipe
    from r1v2_jax.train.config_loader import split_cli_overrides

    if args.k < 2 or args.batch_prompts < 1:
        raise UserError(f"-k must be >= 2 (got {args.k}) and --batch-prompts >= 1 (got "
                        f"{args.batch_prompts})")
    check_paths(args.input, args.output)
    cfg = load_recipe(args.config, split_cli_overrides(args.overrides))
    mesh, rules = inp.mesh_and_rules(cfg)
    tokenizer, _ = inp.load_recipe_tokenizer(cfg)
    config, params = inp.load_policy(cfg, mesh, rules)
    prompt = inp.prompt_config(config, tokenizer, cfg)
    # on_invalid must be "error" here: the output lines correspond one-to-one to the input
    cfg.data.on_invalid = "error"
    examples = inp.prompt_examples(cfg, config, tokenizer, prompt, args.input)
    raw = read_jsonl(args.input)
    r = cfg.rollout
    options = SamplingOptions(args.k, int(r.max_new_tokens), float(r.temperature), float(r.top_p),
                              int(r.top_k))
    score = make_scorer(cfg.reward)
    outcomes = []
    for i in range(0, len(examples), args.batch_prompts):
        groups = rollout(config, params, examples[i:i + args.batch_prompts], options,
                         tokenizer=tokenizer, prompt=prompt, seed=int(cfg.train.seed),
                         policy_version=0, score=score)
        outcomes += [[s.accuracy for s in g] for g in groups]
    keep, pass_rate, report = filter_groups(outcomes)
    write_jsonl(args.output, [rec for rec, k in zip(raw, keep) if k])
    print(json.dumps({**report.as_dict(), "input": args.input, "output": args.output}))
    return 0
