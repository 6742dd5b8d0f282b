"""`r1v2 filter-prompts`: the SSB's offline use (R1V2 sec. 3.3.2): k rollouts per prompt
with the starting policy; prompts whose group is all-correct or all-wrong are dropped
(they would give zero advantages), the rest are written to a new JSONL file."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("filter-prompts", help="drop prompts the policy always or never solves")
    p.add_argument("--config", required=True, help="a GRPO recipe (policy, tokenizer, rollout settings)")
    p.add_argument("--input", required=True, help="JSONL prompt records")
    p.add_argument("--output", required=True, help="filtered JSONL (written atomically)")
    p.add_argument("-k", type=int, default=8, help="rollouts per prompt")
    p.add_argument("--batch-prompts", type=int, default=8)
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=main)


def main(args) -> int:
    import json

    from r1v2_jax.rl.prompt_filter import filter_groups, read_jsonl, write_jsonl
    from r1v2_jax.rl.rollout import SamplingOptions, rollout
    from r1v2_jax.rl.scoring import make_scorer
    from r1v2_jax.train.cli import build_policy, load_examples, load_recipe

    cfg = load_recipe(args.config, args.overrides)
    config, params, tokenizer = build_policy(cfg)
    # on_invalid must be "error" here: the output lines correspond one-to-one to the input
    cfg.data.on_invalid = "error"
    examples, prompt = load_examples(cfg, config, tokenizer, args.input)
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
