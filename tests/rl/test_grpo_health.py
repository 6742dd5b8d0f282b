"""Every GRPO step logs the rollout's health: the engine's tokens/s and slot occupancy, the
time share of rollout vs update, and (every rollout.logprob_check_every steps) the
rollout-vs-trainer log-prob mismatch, which is ~0 when sampler and trainer agree."""

import json
import os

import jax

from r1v2_jax.demo.pipeline import build_context
from r1v2_jax.models import init_params
from r1v2_jax.rl.grpo_trainer import GRPOTrainer
from r1v2_jax.train.config_loader import apply_overrides, load_config_file
from tests.rl.test_grpo_resume import OVERRIDES
from tests.rl.test_grpo_updates import _length_reward


def test_rollout_health_is_logged_each_step(tmp_path):
    cfg = apply_overrides(load_config_file("configs/grpo_demo.py"), OVERRIDES + [
        "config.train.steps=3", "config.train.eval_every=0", "config.train.checkpoint_every=0",
        "config.rollout.logprob_check_every=2", "config.rollout.slots=3"])
    ctx = build_context(cfg, str(tmp_path), log=lambda _: None)
    trainer = GRPOTrainer(cfg, ctx.model, init_params(ctx.model, jax.random.key(0)),
                          tokenizer=ctx.tokenizer, prompt=ctx.prompt, train=ctx.train,
                          heldout=ctx.heldout, score=_length_reward, workdir=str(tmp_path),
                          log=lambda _: None)
    trainer.run()
    rows = [json.loads(x) for x in open(os.path.join(str(tmp_path), "metrics.jsonl"))]
    steps = [r for r in rows if "reward_mean" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]  # a record carries the step it completed
    for r in steps:
        assert r["rollout/decode_tokens_per_s"] > 0 and 0 < r["rollout/slot_occupancy"] <= 1
        assert 0 < r["rollout/time_share"] < 1 and r["update/seconds"] > 0
        assert r["rollout/image_tokens"] > 0
    # checked on the rollouts of steps 0 and 2 only; the sampler's log-probs are the trainer's
    checked = [r for r in steps if "rollout/logprob_delta_max" in r]
    assert [r["step"] for r in checked] == [1, 3]
    assert all(r["rollout/logprob_delta_max"] < 1e-4 and r["rollout/logprob_kl"] < 1e-8
               for r in checked)
