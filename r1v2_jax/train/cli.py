"""`r1v2 train --config configs/<recipe>.py [config.key=value ...] [--workdir DIR]`.

Runs any recipe: `stage = "grpo"` (the GRPO trainer) or `stage = "mpo"` (the MPO
trainer). The recipe names a converted checkpoint (`init.checkpoint`, the output of
`r1v2 convert to-jax`), a tokenizer and JSONL data; training resumes automatically from
the newest checkpoint in the work folder.
"""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a recipe (GRPO or MPO) from a config file")
    p.add_argument("--config", required=True, help="ml_collections recipe file")
    p.add_argument("--workdir", required=True, help="output folder (checkpoints, metrics)")
    p.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (GPU clusters)")
    p.add_argument("--num-processes", type=int, default=None)
    p.add_argument("--process-id", type=int, default=None)
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. config.train.steps=10")
    p.set_defaults(func=main)


def load_recipe(path: str, overrides):
    from r1v2_jax.train.config_loader import apply_overrides, load_config_file

    return apply_overrides(load_config_file(path), overrides)


def build_policy(cfg, log=print):
    """(model config, params, tokenizer) from the recipe's init checkpoint and tokenizer."""
    from r1v2_jax.convert import load_jax_checkpoint
    from r1v2_jax.data.tokenizer import load_tokenizer

    if not cfg.init.checkpoint:
        raise ValueError("config.init.checkpoint is empty: point it at the output of "
                         "`r1v2 convert to-jax` (random initialisation is for the demo only)")
    if not cfg.tokenizer:
        raise ValueError("config.tokenizer is empty: point it at the tokenizer folder")
    tokenizer = load_tokenizer(cfg.tokenizer)
    config, params = load_jax_checkpoint(cfg.init.checkpoint)
    if config.image_token_id != tokenizer.img_context_id:
        raise ValueError(f"checkpoint image_token_id {config.image_token_id} != tokenizer's "
                         f"<IMG_CONTEXT> id {tokenizer.img_context_id} ({cfg.tokenizer})")
    runtime = {k: cfg.model[k] for k in ("dtype", "param_dtype", "attention_impl", "remat_policy")
               if "model" in cfg and k in cfg.model}
    config = config.replace(**runtime)
    log(f"loaded {cfg.init.checkpoint}")
    return config, params, tokenizer


def load_examples(cfg, config, tokenizer, path: str, limit: int | None = None):
    from r1v2_jax.data.image import TilingConfig
    from r1v2_jax.data.prompts import PromptConfig
    from r1v2_jax.data.records import RecordRules, load_prompt_records
    from r1v2_jax.rl.examples import from_record

    tiling = TilingConfig(image_size=config.force_image_size, min_num=config.min_dynamic_patch,
                          max_num=config.max_dynamic_patch, use_thumbnail=config.use_thumbnail)
    prompt = PromptConfig(num_image_token=config.num_image_tokens)
    rules = RecordRules(tiling=tiling, prompt=prompt, on_invalid=cfg.data.on_invalid,
                        max_prompt_tokens=int(cfg.data.max_prompt_tokens))
    loaded = load_prompt_records(path, rules, tokenizer)
    if loaded.skipped:
        print(f"{path}: skipped {sum(loaded.skipped.values())} invalid record(s): {loaded.skipped}")
    records = loaded.records[:limit] if limit else loaded.records
    return [from_record(i, r, tokenizer, tiling, prompt) for i, r in enumerate(records)], prompt


def main(args) -> int:
    from etils import epath

    from r1v2_jax.train import distributed

    distributed.initialize(coordinator=args.coordinator, num_processes=args.num_processes,
                           process_id=args.process_id)
    cfg = load_recipe(args.config, args.overrides)
    if distributed.is_main_process():  # the work folder may be a bucket (gs://...)
        workdir = epath.Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2))
    if cfg.stage == "grpo":
        return run_grpo_recipe(cfg, args.workdir)
    if cfg.stage == "mpo":
        from r1v2_jax.rl.mpo_trainer import run_mpo_recipe
        return run_mpo_recipe(cfg, args.workdir)
    raise ValueError(f"config.stage must be 'grpo' or 'mpo', got {cfg.stage!r}")


def run_grpo_recipe(cfg, workdir: str) -> int:
    from r1v2_jax.rl.grpo_trainer import GRPOTrainer
    from r1v2_jax.rl.scoring import make_scorer
    from r1v2_jax.sharding import DEFAULT_RULES, mesh_from_config, rules_from_config

    if not cfg.data.train:
        raise ValueError("config.data.train is empty: a JSONL file of prompt records is required")
    config, params, tokenizer = build_policy(cfg)
    train, prompt = load_examples(cfg, config, tokenizer, cfg.data.train)
    heldout = train[:0]
    if cfg.data.heldout:
        heldout, _ = load_examples(cfg, config, tokenizer, cfg.data.heldout, int(cfg.data.num_heldout))
    if not heldout:
        raise ValueError("config.data.heldout is empty: eval_accuracy needs a held-out JSONL file")
    rules = rules_from_config(cfg.sharding.rules) if "sharding" in cfg else DEFAULT_RULES
    trainer = GRPOTrainer(cfg, config, params, tokenizer=tokenizer, prompt=prompt, train=train,
                          heldout=heldout, score=make_scorer(cfg.reward), workdir=workdir,
                          mesh=mesh_from_config(cfg.mesh), rules=rules)
    trainer.run()
    return 0
