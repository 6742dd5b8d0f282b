"""Kill the GRPO trainer at a step (or in the middle of a checkpoint write), resume: the
metrics and final parameters equal an uninterrupted run's."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from r1v2_jax.demo.pipeline import build_context
from r1v2_jax.models import init_params
from r1v2_jax.rl.grpo_trainer import GRPOTrainer
from r1v2_jax.train.config_loader import apply_overrides, load_config_file

OVERRIDES = [
    "config.model.vision.image_size=28", "config.model.vision.hidden_size=32",
    "config.model.vision.intermediate_size=64", "config.model.text.hidden_size=32",
    "config.model.text.intermediate_size=64", "config.model.text.num_hidden_layers=2",
    "config.model.text.num_attention_heads=4", "config.model.text.head_dim=8",
    "config.demo.num_examples=200", "config.demo.num_heldout=8",
    "config.rollout.prompts_per_step=2", "config.rollout.num_generations=4",
    "config.rollout.max_new_tokens=8", "config.rollout.eval_batch_size=8",
    "config.grpo.micro_batch_size=4", "config.grpo.num_iterations=2",
    "config.train.steps=4", "config.train.eval_every=2", "config.train.checkpoint_every=1",
    "config.train.progress_bar=False", "config.optim.lr=0.01",
]


def _trainer(ctx, workdir):
    params = init_params(ctx.model, jax.random.key(0))
    return GRPOTrainer(ctx.cfg, ctx.model, params, tokenizer=ctx.tokenizer, prompt=ctx.prompt,
                       train=ctx.train, heldout=ctx.heldout, score=ctx.score, workdir=workdir,
                       log=lambda _: None)


# wall-clock measurements differ between any two runs
TIMINGS = ("seconds", "rollout/seconds", "rollout/time_share", "rollout/generate_seconds",
           "rollout/decode_tokens_per_s", "update/seconds")


def _metrics(workdir):
    rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    for r in rows:
        for key in TIMINGS:
            r.pop(key, None)
    return rows


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    cfg = apply_overrides(load_config_file("configs/grpo_demo.py"), OVERRIDES)
    return build_context(cfg, str(tmp_path_factory.mktemp("ctx")), log=lambda _: None)


@pytest.fixture(scope="module")
def reference(ctx, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("full"))
    t = _trainer(ctx, workdir)
    t.run()
    return _metrics(workdir), jax.tree.map(np.asarray, t.trainable), t


def test_resume_after_kill_equals_uninterrupted(ctx, reference, tmp_path):
    ref_metrics, ref_params, ref_trainer = reference
    assert ref_trainer.ssb is not None and ref_trainer.step == 4
    workdir = str(tmp_path)
    crashed = _trainer(ctx, workdir)
    crashed.run(stop_after=3)  # the "crash", after an eval step
    assert len(crashed.ssb) > 0  # the checkpoint must carry buffered samples (their arrays)
    resumed = _trainer(ctx, workdir)
    resumed.run()
    assert _metrics(workdir) == ref_metrics
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, resumed.trainable),
                 ref_params)
    assert resumed.ssb.state_dict() == ref_trainer.ssb.state_dict()


def test_resume_ignores_a_half_written_checkpoint(ctx, reference, tmp_path):
    """A crash during a checkpoint write leaves orbax's temporary folder behind; resume
    must start from the previous complete checkpoint and still end identical."""
    ref_metrics, ref_params, _ = reference
    workdir = str(tmp_path)
    _trainer(ctx, workdir).run(stop_after=2)
    ckpt = os.path.join(workdir, "checkpoints")
    # simulate the kill mid-write of step 2: step 2 exists only as an unfinished temp dir
    shutil.move(os.path.join(ckpt, "2"), os.path.join(ckpt, "2.orbax-checkpoint-tmp-123"))
    resumed = _trainer(ctx, workdir)
    resumed.run()
    assert resumed.step == 4
    assert _metrics(workdir) == ref_metrics
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, resumed.trainable),
                 ref_params)


REQUIRED = ("step", "stage", "reward_mean", "accuracy", "format_rate", "effective_ratio_fresh",
            "effective_ratio_batch", "replay_ratio", "kl", "clip_frac", "response_len_mean",
            "hallucination_rate", "seconds")


def test_every_step_logs_the_required_metrics(reference):
    _, _, trainer = reference
    rows = [json.loads(l) for l in open(os.path.join(trainer.workdir, "metrics.jsonl"))]
    steps = [r for r in rows if r["step"] > 0]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for r in steps:
        assert set(REQUIRED) <= set(r), sorted(set(REQUIRED) - set(r))
    # held-out evaluation at the start, every train.eval_every=2 steps and at the end
    assert [r["step"] for r in rows if "eval_accuracy" in r] == [0, 2, 4]
    assert all(r["kl"] >= 0.0 for r in steps)  # k3; its value: tests/rl/test_grpo_step.py
