"""Several optimizer updates per GRPO step: only the first is on-policy; later mini-batches
are clipped against the policy the batch was scored with."""

import json
import os

import jax
import numpy as np
import pytest

from r1v2_jax.demo.pipeline import build_context
from r1v2_jax.models import init_params
from r1v2_jax.rl.grpo_trainer import GRPOTrainer
from r1v2_jax.train.config_loader import apply_overrides, load_config_file
from tests.rl.test_grpo_resume import OVERRIDES


def _length_reward(examples, responses):
    """A random-init policy never answers right; the response length varies in a group, so
    rewarding it gives every group non-zero advantages."""
    n = len(responses)
    return {"reward": np.asarray([len(r) for r in responses], np.float32),
            "accuracy": np.zeros(n), "format": np.zeros(n), "rm": np.zeros(n),
            "hallucinated": np.zeros(n, bool)}


def _update_metrics(tmp_path, mini_batch_size):
    cfg = apply_overrides(load_config_file("configs/grpo_demo.py"), OVERRIDES + [
        "config.grpo.num_iterations=1", f"config.grpo.mini_batch_size={mini_batch_size}",
        "config.train.steps=2", "config.train.eval_every=0", "config.train.checkpoint_every=0",
        "config.ssb.enabled=False", "config.optim.lr=0.05", "config.optim.warmup_steps=0",
        "config.optim.clip_norm=0"])
    ctx = build_context(cfg, str(tmp_path), log=lambda _: None)
    trainer = GRPOTrainer(cfg, ctx.model, init_params(ctx.model, jax.random.key(0)),
                          tokenizer=ctx.tokenizer, prompt=ctx.prompt, train=ctx.train,
                          heldout=ctx.heldout, score=_length_reward, workdir=str(tmp_path),
                          log=lambda _: None)
    trainer.run()
    rows = [json.loads(l) for l in open(os.path.join(str(tmp_path), "metrics.jsonl"))]
    return [r for r in rows if "clip_frac" in r]


def test_one_update_per_step_is_on_policy(tmp_path):
    rows = _update_metrics(tmp_path, 0)
    assert rows and all(r["clip_frac"] == 0.0 and r["ratio_mean"] == pytest.approx(1.0)
                        for r in rows)


def test_later_mini_batches_see_the_moved_policy(tmp_path):
    # 2 prompts x 4 samples in mini-batches of 4: the second update's ratio is measured
    # against the policy before the first one moved it, so it leaves 1 and can be clipped
    rows = _update_metrics(tmp_path, 4)
    assert rows and any(r["clip_frac"] > 0.0 for r in rows)
    assert any(abs(r["ratio_mean"] - 1.0) > 1e-3 for r in rows)


def test_sampler_and_update_agree_on_log_probs(tmp_path):
    """The rollout's behaviour log-probs and the trainer's scoring of the packed batch are
    the same numbers at the same positions: the ratio of a fresh sample starts at 1, and
    the policy gradient lands on the tokens that were sampled."""
    from r1v2_jax.rl.rollout import SamplingOptions, rollout

    cfg = apply_overrides(load_config_file("configs/grpo_demo.py"), OVERRIDES)
    ctx = build_context(cfg, str(tmp_path), log=lambda _: None)
    params = init_params(ctx.model, jax.random.key(1))
    trainer = GRPOTrainer(cfg, ctx.model, params, tokenizer=ctx.tokenizer, prompt=ctx.prompt,
                          train=ctx.train, heldout=ctx.heldout, score=_length_reward,
                          workdir=str(tmp_path), log=lambda _: None)
    groups = rollout(ctx.model, params, ctx.train[:2], SamplingOptions(4, 8, 1.0),
                     tokenizer=ctx.tokenizer, prompt=ctx.prompt, seed=3, policy_version=0,
                     score=_length_reward)
    samples = [s for g in groups for s in g]
    scored = trainer._score(samples)
    for s, row in zip(samples, scored):
        start = len(s.example.prompt_ids) - 1
        assert len(s.behaviour_logps) == len(s.completion_ids) > 0
        np.testing.assert_allclose(row[start:start + len(s.completion_ids)], s.behaviour_logps,
                                   atol=1e-4)


def test_second_edition_options_reach_the_update(tmp_path):
    """Every new grpo field, selected by name from the config, runs through a trainer step
    and logs its metrics: RLOO, SAPO at GSPO-token level, entropy bonus + high-entropy mask,
    rollout correction, dynamic sampling, overlong shaping; then truncated masking."""
    cfg = apply_overrides(load_config_file("configs/grpo_demo.py"), OVERRIDES + [
        "config.grpo.num_iterations=1", "config.grpo.mini_batch_size=0", "config.train.steps=1",
        "config.train.eval_every=0", "config.train.checkpoint_every=0", "config.ssb.enabled=False",
        "config.grpo.advantage_estimator=rloo", "config.grpo.scale=none",
        "config.grpo.policy_loss=sapo", "config.grpo.importance_sampling_level=sequence_token",
        "config.grpo.entropy_coef=0.01", "config.grpo.top_entropy_quantile=0.5",
        "config.grpo.rollout_correction.is_level=token", "config.grpo.rollout_correction.is_threshold=1.5",
        "config.grpo.rollout_correction.rs_level=geometric",
        "config.grpo.dynamic_sampling.enabled=True", "config.grpo.dynamic_sampling.max_rounds=2",
        "config.grpo.overlong.enabled=True", "config.grpo.overlong.buffer_len=4"])
    ctx = build_context(cfg, str(tmp_path), log=lambda _: None)
    trainer = GRPOTrainer(cfg, ctx.model, init_params(ctx.model, jax.random.key(0)),
                          tokenizer=ctx.tokenizer, prompt=ctx.prompt, train=ctx.train,
                          heldout=ctx.heldout, score=_length_reward, workdir=str(tmp_path),
                          log=lambda _: None)
    record = trainer.train_step()
    assert record["ds_rounds"] >= 1 and record["ds_kept_groups"] >= 1
    assert record["overlong_penalty_mean"] < 0  # 8 new tokens, the last 4 are penalised
    # the sampler and the trainer agree (same params): the correction is the identity
    assert record["rollout_is_mean"] == pytest.approx(1.0, abs=1e-3)
    assert record["rollout_rs_masked_fraction"] == 0.0
    assert 0.3 < record["entropy_mask_frac"] < 0.7 and record["entropy"] > 0
    assert np.isfinite(record["loss"]) and record["clip_frac"] == 0.0
    assert record["truncated_rate"] == 1.0 and record["num_tokens"] > 0
    # TRL mask_truncated_completions: a random policy never stops within 8 tokens, so every
    # completion leaves the loss mask (no token in any denominator, no KL, no selection)
    trainer.cfg.grpo.mask_truncated_completions = True
    masked = trainer.train_step()
    assert masked["truncated_rate"] == 1.0
    assert masked["num_tokens"] == 0.0 and masked["loss"] == 0.0
    assert masked["entropy_mask_frac"] == 0.0

    bad = apply_overrides(cfg, ["config.grpo.policy_loss=ppo"])
    with pytest.raises(ValueError, match="config.grpo.policy_loss: unknown policy loss 'ppo'; "
                                         "registered: cispo, clip_cov, gmpo, grpo, kl_cov, sapo"):
        GRPOTrainer(bad, ctx.model, init_params(ctx.model, jax.random.key(0)),
                    tokenizer=ctx.tokenizer, prompt=ctx.prompt, train=ctx.train,
                    heldout=ctx.heldout, score=_length_reward, workdir=str(tmp_path / "bad"),
                    log=lambda _: None)
