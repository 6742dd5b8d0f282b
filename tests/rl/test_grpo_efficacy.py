"""GRPO learns: a bandit over the first generated token.

The reward is 1 when the first token after `<think>\\n` begins with a space (" 3", " blue",
...: about a third of the demo vocabulary, so a random policy succeeds ~1/3 of the time)
and 0 otherwise. A working trainer (advantages, loss sign, completion mask, optimizer mask)
pushes the rate of success from ~0.3-0.5 past 0.8 within 30 steps of 2 prompts x 8 samples;
each of those planted bugs keeps it at or below its start (checked when this test was
written: loss sign flipped, advantages zeroed or shuffled across the batch, completion
mask shifted by one token, trainable part frozen, optimizer mask on the vision tower
instead of llm+adapter: end rate 0.01-0.35).
"""

import json
import os

import jax
import numpy as np

from r1v2_jax.demo.pipeline import build_context
from r1v2_jax.models import init_params
from r1v2_jax.rl.grpo_trainer import GRPOTrainer
from r1v2_jax.train.config_loader import apply_overrides, load_config_file
from tests.rl.test_grpo_resume import OVERRIDES

STEPS = 30
# success rate over the first 3 / the last 5 steps; measured (parameter init keys 0-3):
# start 0.31-0.48, end 0.89-0.98; every planted bug: end <= 0.35
START_MAX, END_MIN, MIN_RISE = 0.6, 0.8, 0.3


def first_token_bandit(examples, responses):
    n = len(responses)
    hit = np.asarray([r.removeprefix("<think>\n")[:1] == " " for r in responses], np.float32)
    return {"reward": hit, "accuracy": hit, "format": np.zeros(n, np.float32),
            "rm": np.zeros(n, np.float32), "hallucinated": np.zeros(n, bool)}


def success_curve(workdir: str) -> list[float]:
    """Per-step success rate of the fresh samples of a 30-step GRPO run on the bandit."""
    cfg = apply_overrides(load_config_file("configs/grpo_demo.py"), OVERRIDES + [
        "config.rollout.max_new_tokens=2", "config.rollout.num_generations=8",
        "config.rollout.prompts_per_step=2", "config.grpo.num_iterations=1",
        "config.grpo.mini_batch_size=0", "config.grpo.micro_batch_size=16",
        "config.grpo.track_kl=False", f"config.train.steps={STEPS}",
        "config.train.eval_every=0", "config.train.checkpoint_every=0",
        "config.train.trainable=llm+adapter", "config.ssb.enabled=False",
        "config.optim.lr=0.01", "config.optim.warmup_steps=0", "config.optim.schedule=constant"])
    ctx = build_context(cfg, workdir, log=lambda _: None)
    trainer = GRPOTrainer(cfg, ctx.model, init_params(ctx.model, jax.random.key(0)),
                          tokenizer=ctx.tokenizer, prompt=ctx.prompt, train=ctx.train,
                          heldout=ctx.heldout, score=first_token_bandit, workdir=workdir,
                          log=lambda _: None)
    trainer.run()
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return [r["accuracy"] for r in rows if "accuracy" in r]


def test_grpo_learns_the_first_token_bandit(tmp_path):
    curve = success_curve(str(tmp_path))
    assert len(curve) == STEPS
    start, end = float(np.mean(curve[:3])), float(np.mean(curve[-5:]))
    assert start < START_MAX, curve
    assert end > END_MIN and end - start > MIN_RISE, curve
