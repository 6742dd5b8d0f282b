"""The jitted GRPO update's KL tracking: with beta = 0 and `track_kl`, the `kl` metric is
the k3 estimate against the reference policy, and the update is exactly the untracked one."""

import jax
import numpy as np
import pytest

from r1v2_jax.models import init_params
from r1v2_jax.rl.grpo_step import make_grpo_update, make_score_fn
from r1v2_jax.train.masks import merge_params, split_params, trainable_parts
from tests.sharding import grpo_fixture as fx


def test_track_kl_measures_without_penalising():
    config = fx.tiny_config()
    params = init_params(config, jax.random.key(0))
    parts = trainable_parts("llm+adapter")
    trainable, frozen = split_params(params, parts)
    # the reference: another trainable part, sharing the frozen vision encoder
    ref_trainable = jax.tree.map(lambda x: x * 1.05, trainable)
    moved = merge_params(ref_trainable, frozen)
    batch = fx.host_batch(config, num_micro=1, micro=4, seq=24)
    score = make_score_fn(config, 1.0, chunk=8)
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    logps = np.asarray(score(params, flat(batch.input_ids), flat(batch.attention_mask),
                             flat(batch.pixel_values)))
    ref = np.asarray(score(moved, flat(batch.input_ids), flat(batch.attention_mask),
                           flat(batch.pixel_values)))
    batch.old_logps = logps.reshape(batch.old_logps.shape)
    mask = flat(batch.completion_mask) > 0
    d = (ref - logps)[mask]
    k3 = float(np.mean(np.exp(d) - d - 1.0))  # per-token mean over completion tokens
    assert k3 > 1e-4

    opt = fx.optimizer()
    runs = {}
    for track in (False, True):
        update = make_grpo_update(config, fx.loss_options(beta=0.0, track_kl=track), opt,
                                  donate=False)
        runs[track] = update(frozen, ref_trainable, trainable, opt.init(trainable), batch)
    assert "kl" not in runs[False][2]
    assert float(runs[True][2]["kl"]) == pytest.approx(k3, rel=1e-4)
    assert float(runs[True][2]["loss"]) == float(runs[False][2]["loss"])
    jax.tree.map(np.testing.assert_array_equal, runs[True][0], runs[False][0])


def test_batch_level_selections_keep_accumulation_exact():
    """Clip-Cov + high-entropy mask + entropy bonus + per-token IS weights: the selections
    come from the whole update batch, so 4 micro-batches of 2 update exactly like 1 of 8."""
    config = fx.tiny_config()
    params = init_params(config, jax.random.key(0))
    trainable, frozen = split_params(params, trainable_parts("llm+adapter"))
    opts = fx.loss_options(beta=0.0, policy_loss="clip_cov", clip_cov_ratio=0.2, clip_cov_lb=0.0,
                           top_entropy_quantile=0.5, entropy_coef=0.01, use_old_logps=False,
                           apply_is_weights=True)
    weights = np.random.default_rng(1).uniform(0.5, 1.5, (8, 23)).astype(np.float32)
    opt = fx.optimizer()
    runs = []
    for num_micro, micro in ((4, 2), (1, 8)):
        batch = fx.host_batch(config, num_micro=1, micro=8, seq=24)
        batch = jax.tree.map(lambda x: x.reshape((num_micro, micro) + x.shape[2:]), batch)
        batch.is_weights = weights.reshape(num_micro, micro, 23)
        update = make_grpo_update(config, opts, opt, donate=False)
        runs.append(update(frozen, trainable, trainable, opt.init(trainable), batch))
    (p4, _, m4), (p1, _, m1) = runs
    assert 0 < float(m1["cov_selected_frac"]) and 0.4 < float(m1["entropy_mask_frac"]) < 0.6
    for key in ("loss", "entropy", "cov_selected_frac", "entropy_mask_frac", "ratio_mean"):
        np.testing.assert_allclose(float(m4[key]), float(m1[key]), rtol=2e-5, atol=1e-7, err_msg=key)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p4, p1)


def test_masked_tokens_are_inert_in_the_update():
    """Tokens outside the loss mask (a truncated row, rejected tokens) reach no part of the
    update: not the loss, the KL, the entropy bonus, the high-entropy quantile or the
    metrics. Two batches that differ only on masked positions (other tokens, old log-probs,
    advantage) give the same update, and num_tokens counts the kept tokens only."""
    config = fx.tiny_config()
    params = init_params(config, jax.random.key(0))
    trainable, frozen = split_params(params, trainable_parts("llm+adapter"))
    ref_trainable = jax.tree.map(lambda x: x * 1.05, trainable)
    opts = fx.loss_options(loss_type="bnpo", top_entropy_quantile=0.5, entropy_coef=0.01)
    base = fx.host_batch(config, num_micro=2, micro=2, seq=24, seed=3)
    keep = np.ones(base.completion_mask.shape, np.float32)
    keep[0, 1] = 0.0  # a truncated completion: its whole row
    cols = np.flatnonzero(base.completion_mask[1, 0])
    keep[1, 0, cols[1:3]] = 0.0  # two rejected tokens
    base.completion_mask = base.completion_mask * keep
    base.old_logps = np.full(base.old_logps.shape, -1.5, np.float32)
    other = jax.tree.map(np.copy, base)
    rng = np.random.default_rng(7)
    other.input_ids[0, 1, 10:] = rng.integers(config.image_token_id + 1, config.text.vocab_size, 14)
    other.old_logps[keep == 0] = -9.0
    other.advantages[0, 1] = 5.0
    opt = fx.optimizer()
    update = make_grpo_update(config, opts, opt, donate=False)
    (p_a, _, m_a), (p_b, _, m_b) = (update(frozen, ref_trainable, trainable, opt.init(trainable), b)
                                    for b in (base, other))
    assert float(m_a["num_tokens"]) == float(base.completion_mask.sum())
    assert float(m_a["kl"]) > 0 and 0.4 < float(m_a["entropy_mask_frac"]) < 0.6
    for key in ("loss", "kl", "entropy", "entropy_mask_frac", "ratio_mean", "clip_frac", "num_tokens"):
        np.testing.assert_allclose(float(m_b[key]), float(m_a[key]), rtol=1e-6, err_msg=key)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), p_b, p_a)
