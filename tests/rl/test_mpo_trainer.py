"""MPO step (exact big-batch loss, gradient and delta under micro-batching, for every
loss variant) and trainer (kill mid-round, resume: metrics, parameters and the BCO delta
equal an uninterrupted run's)."""

import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from r1v2_jax.data import synthetic
from r1v2_jax.demo.pipeline import build_context
from r1v2_jax.losses import bco_delta_init, bco_delta_update, dpo_loss, sequence_logps, sft_loss
from r1v2_jax.models import init_params
from r1v2_jax.rl.mpo_step import MPOBatch, MPOLossOptions, mpo_update, pair_token_logps
from r1v2_jax.rl.mpo_trainer import MPOTrainer, mpo_batch, stage_config
from r1v2_jax.rl.pairs import PreferencePair
from r1v2_jax.rl.rewards import format_reward
from r1v2_jax.train.config_loader import apply_overrides, load_config_file
from r1v2_jax.train.masks import merge_params, split_params

sys.path.insert(0, "configs")
from mpo_base import mpo_demo_defaults  # noqa: E402

OVERRIDES = [
    "config.model.vision.image_size=28", "config.model.vision.hidden_size=32",
    "config.model.vision.intermediate_size=64", "config.model.text.hidden_size=32",
    "config.model.text.intermediate_size=64", "config.model.text.num_hidden_layers=2",
    "config.model.text.num_attention_heads=4", "config.model.text.head_dim=8",
    "config.demo.num_examples=120", "config.demo.num_heldout=4",
    "config.rollout.max_new_tokens=8", "config.rollout.eval_batch_size=4",
    "config.mpo.prompts_per_round=4", "config.mpo.num_samples=4", "config.mpo.batch_size=4",
    "config.mpo.micro_batch_size=2", "config.mpo.steps_per_round=2",
    "config.mpo.min_pairs_per_round=2", "config.mpo.score_range=(0.0, 1.0)",
    "config.mpo.threshold=15.0",
]


def _score(examples, responses):
    """Deterministic, varied rewards for an untrained model (no answer-checker workers)."""
    n = len(responses)
    return {"reward": np.asarray([(len(r) % 5) / 4 for r in responses], np.float32),
            "accuracy": np.zeros(n, np.float32),
            "format": np.asarray([format_reward(r) for r in responses], np.float32),
            "hallucinated": np.asarray([e.scene is not None and synthetic.hallucinated(r, e.scene, e.question)
                                        for e, r in zip(examples, responses)])}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    cfg = load_config_file("configs/grpo_demo.py")
    defaults = mpo_demo_defaults()
    cfg.rm, cfg.mpo = defaults.rm, defaults.mpo
    cfg.mpo.train = ml_collections.ConfigDict(dict(steps=4, trainable="llm+adapter", eval_every=0,
                                                   checkpoint_every=1, keep_checkpoints=2))
    cfg.mpo.optim = ml_collections.ConfigDict(dict(lr=0.01, warmup_steps=0, schedule="constant"))
    cfg = apply_overrides(cfg, OVERRIDES)
    return build_context(cfg, str(tmp_path_factory.mktemp("ctx")), log=lambda _: None)


# ----------------------------------------------------------------------------- step
def _pairs(ctx, n=4):
    rng = np.random.default_rng(0)
    word = lambda k: rng.integers(20, 60, size=k).astype(np.int32)  # noqa: E731
    eos = np.asarray([ctx.tokenizer.eos_id], np.int32)
    return [PreferencePair(ctx.train[i], np.concatenate([word(3 + i), eos]),
                           np.concatenate([word(5 - i % 3), eos])) for i in range(n)]


def _batch(ctx, pairs, micro):
    size = ctx.model.vision.image_size
    return mpo_batch(pairs, seq_len=64, micro=micro, tiles_per_micro=micro, pad_id=ctx.tokenizer.pad_id,
                     image_shape=(size, size, 3))


def _flat(x):
    return x.reshape((-1,) + x.shape[2:])


@pytest.mark.parametrize("loss", ["mpo", "dpo", "sft"])
def test_micro_batching_is_exact_and_delta_updates_once(ctx, loss):
    params = init_params(ctx.model, jax.random.key(1))
    trainable, frozen = split_params(params, ("text", "adapter"))
    # a reference different from the policy, so Delta != 0
    ref = jax.tree.map(lambda x: x * 0.9, trainable)
    opts = MPOLossOptions(loss=loss, beta=0.5, label_smoothing=0.1)
    sgd = optax.sgd(1.0)
    delta0 = bco_delta_init()._replace(mean=jnp.float32(0.3), count=jnp.float32(2.0))
    pairs = _pairs(ctx)
    runs = {}
    for micro in (4, 2, 1):
        runs[micro] = mpo_update(ctx.model, opts, sgd, frozen, ref, trainable, sgd.init(trainable),
                                 delta0, _batch(ctx, pairs, micro))
    for micro in (2, 1):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
                     runs[micro][0], runs[4][0])
        np.testing.assert_allclose(runs[micro][3]["loss"], runs[4][3]["loss"], rtol=1e-5)
        np.testing.assert_allclose(runs[micro][2].mean, runs[4][2].mean, rtol=1e-5)

    # reference: one direct jax.grad over the whole batch (M = 1), written from the losses
    b1 = jax.tree.map(lambda x: x[0], _batch(ctx, pairs, 4))
    cm, rm = b1.chosen_completion, b1.rejected_completion
    ref_c, ref_r = pair_token_logps(ctx.model, merge_params(ref, frozen), b1, 512)
    ref_c, ref_r = sequence_logps(ref_c, cm), sequence_logps(ref_r, rm)

    def direct(tr):
        c, r = pair_token_logps(ctx.model, merge_params(tr, frozen), b1, 512)
        d, _ = dpo_loss(sequence_logps(c, cm), sequence_logps(r, rm), ref_c, ref_r, beta=0.5,
                        label_smoothing=0.1)
        x = jnp.mean(jnp.concatenate([0.5 * (sequence_logps(c, cm) - ref_c),
                                      0.5 * (sequence_logps(r, rm) - ref_r)]))
        delta = jax.lax.stop_gradient(bco_delta_update(delta0, x).mean)
        q = jnp.mean(-jax.nn.log_sigmoid(0.5 * (sequence_logps(c, cm) - ref_c) - delta)
                     - jax.nn.log_sigmoid(-(0.5 * (sequence_logps(r, rm) - ref_r) - delta)))
        g, _ = sft_loss(c, cm)
        total = {"mpo": 0.8 * d + 0.2 * q + 1.0 * g, "dpo": d, "sft": g}[loss]
        return total, delta

    (want_loss, want_delta), grads = jax.value_and_grad(direct, has_aux=True)(trainable)
    np.testing.assert_allclose(runs[2][3]["loss"], want_loss, rtol=1e-5)
    # delta is updated exactly once per step, with the whole batch's statistic, in every variant
    np.testing.assert_allclose(runs[2][2].mean, want_delta, rtol=1e-5)
    np.testing.assert_allclose(runs[2][2].count, 3.0)
    want_params = jax.tree.map(lambda p, g: p - g, trainable, grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
                 runs[2][0], want_params)


def test_first_step_has_zero_implicit_rewards(ctx):
    params = init_params(ctx.model, jax.random.key(2))
    trainable, frozen = split_params(params, ("adapter",))
    sgd = optax.sgd(0.1)
    _, _, delta, m = mpo_update(ctx.model, MPOLossOptions(), sgd, frozen, trainable, trainable,
                                sgd.init(trainable), bco_delta_init(), _batch(ctx, _pairs(ctx), 2))
    assert m["rewards_chosen"] == 0.0 and m["rewards_rejected"] == 0.0 and float(delta.mean) == 0.0
    np.testing.assert_allclose(m["loss_pref"], np.log(2.0), rtol=1e-6)  # -log sigma(0)
    np.testing.assert_allclose(m["loss_qual"], 2 * np.log(2.0), rtol=1e-6)


def test_stage_config_overrides_and_rejects_unknown(ctx):
    cfg = stage_config(ctx.cfg, "mpo")
    assert cfg.train.steps == 4 and cfg.optim.lr == 0.01 and cfg.reward.w_rm == 0.5
    assert ctx.cfg.train.steps != 4  # the recipe itself is untouched
    bad = ml_collections.ConfigDict(ctx.cfg.to_dict())
    bad.mpo.optim.lr_typo = 1.0
    with pytest.raises(ValueError, match="mpo.optim: unknown field.*lr_typo"):
        stage_config(bad, "mpo")


# ----------------------------------------------------------------------------- trainer
def _trainer(ctx, workdir):
    cfg = stage_config(ctx.cfg, "mpo")
    cfg.reward.w_rm = 0.0
    params = init_params(ctx.model, jax.random.key(0))
    return MPOTrainer(cfg, ctx.model, params, tokenizer=ctx.tokenizer, prompt=ctx.prompt,
                      train=ctx.train, heldout=ctx.heldout, score=_score, workdir=workdir,
                      log=lambda _: None)


def _metrics(workdir):
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    for r in rows:
        r.pop("seconds", None)
    return rows


def test_resume_mid_round_equals_uninterrupted(ctx, tmp_path):
    full = _trainer(ctx, str(tmp_path / "full"))
    full.run()
    ref = _metrics(str(tmp_path / "full"))
    assert [r["step"] for r in ref] == [1, 2, 3, 4] and [r["round"] for r in ref] == [1, 1, 2, 2]
    for key in ("loss", "loss_pref", "loss_qual", "loss_gen", "rewards_chosen", "rewards_rejected",
                "margins", "pref_accuracy", "delta", "sampled_hallucination_rate", "round_pairs",
                "round_pairs_at_15", "eval_accuracy"):
        assert key in ref[-1], key
    assert ref[1]["delta"] != 0.0  # the policy moved after step 1, so the delta is live

    workdir = str(tmp_path / "killed")
    _trainer(ctx, workdir).run(stop_after=3)  # crash after the first step of round 2
    resumed = _trainer(ctx, workdir)
    resumed.run()
    assert resumed.step == 4 and resumed.counters["rounds"] == 2
    assert _metrics(workdir) == ref
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, resumed.trainable),
                 jax.tree.map(np.asarray, full.trainable))
    assert float(resumed.delta.mean) == float(full.delta.mean)
    assert float(resumed.delta.count) == float(full.delta.count) == 4.0  # 1e-24 + 4 steps (fp32)
