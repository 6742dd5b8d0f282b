"""MPO step (exact big-batch loss, gradient and delta under micro-batching, for every
loss variant) and trainer (kill mid-round, resume: metrics, parameters and the BCO delta
equal an uninterrupted run's)."""

import functools
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
from r1v2_jax.losses import (PREFERENCE_OBJECTIVES, bco_delta_init, bco_pair_loss, dpo_loss, mpo_loss,
                             sequence_logps, sft_loss)
from r1v2_jax.models import init_params
from r1v2_jax.rl.mpo_step import MPOLossOptions, mpo_update, objective, pair_token_logps
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
    # the fake scorer never answers correctly: pair on score alone (kills an ignored option)
    "config.mpo.require_correct_chosen=False",
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
    cfg.mpo.train = ml_collections.ConfigDict(dict(steps=3, trainable="llm+adapter", eval_every=0,
                                                   checkpoint_every=1, keep_checkpoints=2))
    cfg.mpo.optim = ml_collections.ConfigDict(dict(lr=0.01, warmup_steps=0, schedule="constant"))
    cfg = apply_overrides(cfg, OVERRIDES)
    return build_context(cfg, str(tmp_path_factory.mktemp("ctx")), log=lambda _: None)


@pytest.fixture(scope="module")
def params0(ctx):
    return jax.jit(init_params, static_argnums=0)(ctx.model, jax.random.key(0))


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


def test_micro_batching_is_exact_and_delta_updates_once(ctx, params0):
    """Two micro-batches give exactly the loss, gradient and delta of one direct jax.grad
    of the MPO loss over the whole batch (written here from the loss formulas)."""
    trainable, frozen = split_params(params0, ("text", "adapter"))
    ref = jax.tree.map(lambda x: x * 0.9, trainable)  # a reference != policy, so Delta != 0
    beta, ls = 0.5, 0.1
    opts = MPOLossOptions(loss="mpo", beta=beta, label_smoothing=ls)
    sgd = optax.sgd(1.0)
    delta0 = bco_delta_init()._replace(mean=jnp.float32(0.3), count=jnp.float32(2.0))
    pairs = _pairs(ctx)
    update = jax.jit(functools.partial(mpo_update, ctx.model, opts, sgd))
    new_params, _, new_delta, m = update(frozen, ref, trainable, sgd.init(trainable), delta0,
                                         _batch(ctx, pairs, 2))

    whole = jax.tree.map(lambda x: x[0], _batch(ctx, pairs, 4))
    cm, rm = whole.chosen_completion, whole.rejected_completion

    @jax.jit
    def direct(tr):
        ref_c, ref_r = pair_token_logps(ctx.model, merge_params(ref, frozen), whole, 512)
        ref_c, ref_r = sequence_logps(ref_c, cm), sequence_logps(ref_r, rm)
        c, r = pair_token_logps(ctx.model, merge_params(tr, frozen), whole, 512)
        dc, dr = beta * (sequence_logps(c, cm) - ref_c), beta * (sequence_logps(r, rm) - ref_r)
        z = dc - dr
        pref = jnp.mean(-(1 - ls) * jax.nn.log_sigmoid(z) - ls * jax.nn.log_sigmoid(-z))
        x = jnp.mean(jnp.concatenate([dc, dr]))
        delta = jax.lax.stop_gradient(delta0.mean + (x - delta0.mean) / (delta0.count + 1))
        qual = jnp.mean(-jax.nn.log_sigmoid(dc - delta) - jax.nn.log_sigmoid(-(dr - delta)))
        gen = -jnp.sum(c * cm) / jnp.sum(cm)
        return 0.8 * pref + 0.2 * qual + 1.0 * gen, delta

    (want_loss, want_delta), grads = jax.value_and_grad(direct, has_aux=True)(trainable)
    np.testing.assert_allclose(m["loss"], want_loss, rtol=1e-5)
    np.testing.assert_allclose(new_delta.mean, want_delta, rtol=1e-5)
    assert float(new_delta.count) == 3.0  # one update per optimizer step
    assert float(m["delta"]) == float(new_delta.mean)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
                 new_params, jax.tree.map(lambda p, g: p - g, trainable, grads))


@pytest.mark.parametrize("loss", ["mpo", "dpo", "sigmoid", "bco_pair", "sft"])
def test_objective_variants(loss):
    """The batch objective of each registered variant is the library loss; all carry the
    delta and log the MPO metrics."""
    rng = np.random.default_rng(3)
    c, r = (jnp.asarray(rng.normal(-1, 0.5, (3, 6)), jnp.float32) for _ in range(2))
    cm = jnp.asarray([[1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]], jnp.float32)
    rm = jnp.asarray([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0]], jnp.float32)
    ref_c, ref_r = jnp.asarray([-2.0, -4.0, -5.0]), jnp.asarray([-1.5, -6.0, -2.5])
    opts = MPOLossOptions(loss=loss, beta=0.2, label_smoothing=0.05)
    loss_value, (state, metrics) = objective(opts, c, cm, r, rm, ref_c, ref_r, bco_delta_init())
    want = {"mpo": lambda: mpo_loss(c, cm, r, rm, ref_c, ref_r, bco_delta_init(), beta=0.2,
                                    label_smoothing=0.05)[0],
            "dpo": lambda: dpo_loss(sequence_logps(c, cm), sequence_logps(r, rm), ref_c, ref_r,
                                    beta=0.2, label_smoothing=0.05)[0],
            "bco_pair": lambda: bco_pair_loss(sequence_logps(c, cm), sequence_logps(r, rm), ref_c,
                                              ref_r, bco_delta_init(), beta=0.2)[0],
            "sft": lambda: sft_loss(c, cm)[0]}
    want["sigmoid"] = want["dpo"]
    want = want[loss]()
    np.testing.assert_allclose(loss_value, want, rtol=1e-6)
    x = jnp.mean(jnp.concatenate([0.2 * (sequence_logps(c, cm) - ref_c),
                                  0.2 * (sequence_logps(r, rm) - ref_r)]))
    np.testing.assert_allclose(state.mean, x, rtol=1e-6)  # first delta == first statistic
    assert {"loss_pref", "loss_qual", "loss_gen", "rewards_chosen", "rewards_rejected", "margins",
            "pref_accuracy", "delta"} <= set(metrics)
    with pytest.raises(ValueError, match=r"^config.mpo.loss: unknown preference objective 'ipo'; "
                                         r"registered: bco_pair, dpo, mpo, sft, sigmoid"):
        MPOLossOptions(loss="ipo")


# A researcher's new objective: one function and one registration line (docs/losses.md).
def length_normalised_ipo(x, *, beta, **_):
    """IPO (Azar et al. 2023) as TRL's loss_type="ipo": log-probs averaged over each
    completion's tokens, h = (c/n_c - r/n_r) - (ref_c/n_c - ref_r/n_r),
    loss = mean (h - 1 / (2 beta))^2."""
    n_c, n_r = jnp.sum(x.chosen_mask, -1), jnp.sum(x.rejected_mask, -1)
    h = (x.chosen / n_c - x.rejected / n_r) - (x.ref_chosen / n_c - x.ref_rejected / n_r)
    return jnp.mean(jnp.square(h - 1.0 / (2.0 * beta))), {"ipo_h": jnp.mean(h)}


PREFERENCE_OBJECTIVES.register("test_ipo", length_normalised_ipo)


def test_a_registered_objective_trains_through_mpo_update(ctx, params0):
    """An objective registered by name (here IPO) is selected by `mpo.loss`, trains through
    `mpo_update` with two micro-batches exactly like a direct jax.grad of its formula on
    the whole batch, logs its own metric and still the MPO metrics and delta."""
    trainable, frozen = split_params(params0, ("text", "adapter"))
    ref = jax.tree.map(lambda x: x * 0.9, trainable)
    beta = 0.7
    opts = MPOLossOptions(loss="test_ipo", beta=beta)
    sgd = optax.sgd(1.0)
    pairs = _pairs(ctx)
    update = jax.jit(functools.partial(mpo_update, ctx.model, opts, sgd))
    new_params, _, new_delta, m = update(frozen, ref, trainable, sgd.init(trainable), bco_delta_init(),
                                         _batch(ctx, pairs, 2))
    whole = jax.tree.map(lambda x: x[0], _batch(ctx, pairs, 4))
    cm, rm = whole.chosen_completion, whole.rejected_completion

    @jax.jit
    def direct(tr):
        ref_c, ref_r = pair_token_logps(ctx.model, merge_params(ref, frozen), whole, 512)
        c, r = pair_token_logps(ctx.model, merge_params(tr, frozen), whole, 512)
        avg = lambda t, mask: jnp.sum(t * mask, -1) / jnp.sum(mask, -1)  # noqa: E731
        h = (avg(c, cm) - avg(r, rm)) - (avg(ref_c, cm) - avg(ref_r, rm))
        return jnp.mean((h - 1.0 / (2.0 * beta)) ** 2), jnp.mean(h)

    (want_loss, want_h), grads = jax.value_and_grad(direct, has_aux=True)(trainable)
    assert float(want_loss) > 0.1 and float(jnp.abs(want_h)) > 1e-4  # the reference differs
    np.testing.assert_allclose(m["loss"], want_loss, rtol=1e-5)
    np.testing.assert_allclose(m["ipo_h"], want_h, rtol=1e-4, atol=1e-7)
    assert {"loss_pref", "loss_qual", "loss_gen", "margins", "pref_accuracy", "delta"} <= set(m)
    assert float(new_delta.count) == 1.0 and float(m["delta"]) == float(new_delta.mean) != 0.0
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
                 new_params, jax.tree.map(lambda p, g: p - g, trainable, grads))


def test_stage_config_overrides_and_rejects_unknown(ctx):
    cfg = stage_config(ctx.cfg, "mpo")
    assert cfg.train.steps == 3 and cfg.optim.lr == 0.01 and cfg.reward.w_rm == 0.5
    assert ctx.cfg.train.steps != 3  # the recipe itself is untouched
    bad = ml_collections.ConfigDict(ctx.cfg.to_dict())
    bad.mpo.optim.lr_typo = 1.0
    with pytest.raises(ValueError, match="mpo.optim: unknown field.*lr_typo"):
        stage_config(bad, "mpo")


# ----------------------------------------------------------------------------- trainer
def _trainer(ctx, params, workdir):
    cfg = stage_config(ctx.cfg, "mpo")
    cfg.reward.w_rm = 0.0
    # prompts of one generation bucket (<= 32 tokens): rollouts compile once
    short = [e for e in ctx.train if len(e.prompt_ids) <= 32]
    return MPOTrainer(cfg, ctx.model, params, tokenizer=ctx.tokenizer, prompt=ctx.prompt,
                      train=short, heldout=ctx.heldout, score=_score, workdir=workdir,
                      log=lambda _: None)


def _metrics(workdir):
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    for r in rows:
        r.pop("seconds", None)
    return rows


def test_resume_mid_round_equals_uninterrupted(ctx, params0, tmp_path):
    full = _trainer(ctx, params0, str(tmp_path / "full"))
    full.run()
    ref = _metrics(str(tmp_path / "full"))
    assert [r["step"] for r in ref] == [1, 2, 3] and [r["round"] for r in ref] == [1, 1, 2]
    for key in ("loss", "loss_pref", "loss_qual", "loss_gen", "rewards_chosen", "rewards_rejected",
                "margins", "pref_accuracy", "delta", "sampled_hallucination_rate", "round_pairs",
                "round_pairs_at_15", "eval_accuracy"):
        assert key in ref[-1], key
    # step 1: the reference is the policy, so every implicit reward is exactly 0
    assert ref[0]["rewards_chosen"] == ref[0]["rewards_rejected"] == ref[0]["delta"] == 0.0
    np.testing.assert_allclose(ref[0]["loss_pref"], np.log(2.0), rtol=1e-6)  # -log sigma(0)
    np.testing.assert_allclose(ref[0]["loss_qual"], 2 * np.log(2.0), rtol=1e-6)
    assert ref[1]["delta"] != 0.0  # the policy moved after step 1, so the delta is live

    workdir = str(tmp_path / "killed")
    # crash after step 1, in the middle of round 1: the resumed run trains on the restored
    # pool, then samples round 2 from the restored prompt order and RNG
    _trainer(ctx, params0, workdir).run(stop_after=1)
    resumed = _trainer(ctx, params0, workdir)
    resumed.run()
    assert resumed.step == 3 and resumed.counters["rounds"] == 2
    assert _metrics(workdir) == ref
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, resumed.trainable),
                 jax.tree.map(np.asarray, full.trainable))
    assert float(resumed.delta.mean) == float(full.delta.mean)
    assert float(resumed.delta.count) == float(full.delta.count) == 3.0  # 1e-24 + 3 steps (fp32)
