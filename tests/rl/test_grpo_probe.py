"""The GRPO trainer's fixed probe: the same held-out prompts, sampled k times every N steps,
logged as probe/accuracy and probe/pass_at_k: at step 0 with the start evaluation, then
after the update of every N-th step and of the last one."""

import json
import os

import jax
import numpy as np
import pytest

from r1v2_jax.demo.pipeline import build_context
from r1v2_jax.models import init_params
from r1v2_jax.rl.evaluate import evaluate_sampled
from r1v2_jax.rl.grpo_trainer import GRPOTrainer
from r1v2_jax.train.config_loader import apply_overrides, load_config_file
from tests.rl.test_grpo_efficacy import first_token_bandit
from tests.rl.test_grpo_resume import OVERRIDES


def test_probe_every_n_steps_on_fixed_prompts(tmp_path):
    cfg = apply_overrides(load_config_file("configs/grpo_demo.py"), OVERRIDES + [
        "config.grpo.num_iterations=1", "config.train.steps=5", "config.train.eval_every=0",
        "config.train.checkpoint_every=0", "config.ssb.enabled=False",
        "config.probe.prompts=3", "config.probe.num_samples=3", "config.probe.every=2",
        "config.probe.temperature=0.7", "config.train.seed=5"])
    ctx = build_context(cfg, str(tmp_path), log=lambda _: None)
    params = init_params(ctx.model, jax.random.key(0))
    trainer = GRPOTrainer(cfg, ctx.model, params, tokenizer=ctx.tokenizer, prompt=ctx.prompt,
                          train=ctx.train, heldout=ctx.heldout, score=first_token_bandit,
                          workdir=str(tmp_path), log=lambda _: None)
    trainer.run()
    rows = [json.loads(line) for line in open(os.path.join(str(tmp_path), "metrics.jsonl"))]
    probed = [r["step"] for r in rows if "probe/accuracy" in r]
    assert probed == [0, 2, 4, 5]  # start, every 2 steps, the last step
    steps = {r["step"]: r for r in rows if "probe/accuracy" in r}
    # step 0 probes the initial policy: the same numbers as a direct sampled evaluation
    direct = evaluate_sampled(ctx.model, params, ctx.heldout[:3], tokenizer=ctx.tokenizer,
                              prompt=ctx.prompt, max_new_tokens=8, batch_size=8, num_samples=3,
                              temperature=0.7, seed=5, score=first_token_bandit)
    assert steps[0]["probe/accuracy"] == pytest.approx(direct["eval_sampled_accuracy"])
    assert steps[0]["probe/pass_at_k"] == pytest.approx(direct["eval_pass_at_k"])
    assert 0.0 < direct["eval_sampled_accuracy"] < 1.0  # the probe can tell policies apart
    assert np.isfinite(steps[2]["probe/accuracy"])

    bad = apply_overrides(cfg, ["config.probe.prompts=99"])
    with pytest.raises(ValueError, match="config.probe.prompts=99 but only 8 held-out prompts"):
        GRPOTrainer(bad, ctx.model, params, tokenizer=ctx.tokenizer, prompt=ctx.prompt,
                    train=ctx.train, heldout=ctx.heldout, score=first_token_bandit,
                    workdir=str(tmp_path / "bad"), log=lambda _: None)
