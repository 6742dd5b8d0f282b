"""Group advantages (TRL scale_rewards, Tunix RLOO) and DAPO overlong shaping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from _loss_references import jit_call, trl_advantages
from r1v2_jax.losses import group_advantages, overlong_penalty


def test_hand_computed_group_and_rloo():
    rewards = jnp.array([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    std = np.sqrt(1.0 / 3.0)  # unbiased std of [1, 0, 0, 1]
    adv = jit_call(group_advantages, rewards, group_size=4)
    np.testing.assert_allclose(adv[:4], np.array([0.5, -0.5, -0.5, 0.5]) / (std + 1e-4), rtol=1e-6)
    np.testing.assert_array_equal(adv[4:], 0.0)  # vanishing advantage of an all-equal group
    # RLOO: r_i - mean of the other three
    rloo = jit_call(group_advantages, rewards, group_size=4, estimator="rloo", scale="none")
    np.testing.assert_allclose(rloo, [2 / 3, -2 / 3, -2 / 3, 2 / 3, 0, 0, 0, 0], rtol=1e-6, atol=1e-7)
    # population std (ddof=0) of [1, 0, 0, 1] is 0.5; Tunix eps 1e-6
    adv0 = jit_call(group_advantages, rewards, group_size=4, std_ddof=0, eps=1e-6)
    np.testing.assert_allclose(adv0[:4], np.array([1.0, -1.0, -1.0, 1.0]) * 0.5 / (0.5 + 1e-6), rtol=1e-6)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_matches_trl_scale_rewards(scale):
    rewards = np.random.default_rng(0).normal(size=24)
    expected = trl_advantages(torch.tensor(rewards), 6, scale).numpy()
    got = jax.jit(group_advantages, static_argnums=1, static_argnames="scale")(jnp.asarray(rewards), 6,
                                                                                scale=scale)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_rloo_is_rescaled_grpo_centering():
    rewards = jnp.asarray(np.random.default_rng(1).normal(size=12), jnp.float32)
    g = 4
    rloo = jit_call(group_advantages, rewards, group_size=g, estimator="rloo", scale="none")
    centred = jit_call(group_advantages, rewards, group_size=g, scale="none")
    np.testing.assert_allclose(rloo, g / (g - 1) * centred, rtol=1e-5, atol=1e-6)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(jnp.zeros(7), 4)
    with pytest.raises(ValueError, match="rloo"):
        group_advantages(jnp.zeros(4), 1, estimator="rloo")
    with pytest.raises(ValueError, match="scale"):
        group_advantages(jnp.zeros(4), 2, scale="global")
    with pytest.raises(ValueError, match="group_size > 1"):
        group_advantages(jnp.zeros(4), 1)


def test_overlong_penalty_hand_computed():
    lengths = jnp.array([50, 80, 81, 90, 100, 101, 300])
    got = jit_call(overlong_penalty, lengths, max_len=100, cache_len=20)
    np.testing.assert_allclose(got, [0.0, 0.0, -1 / 20, -0.5, -1.0, -1.0, -1.0], rtol=1e-6)
    half = jit_call(overlong_penalty, lengths, max_len=100, cache_len=20, penalty_factor=0.5)
    np.testing.assert_allclose(half, 0.5 * got, rtol=1e-6)
    with pytest.raises(ValueError, match="cache_len"):
        overlong_penalty(lengths, 100, 0)


# ---------------------------------------------------------------- second edition

from _policy_references import verl_reinforce_pp_baseline, verl_rloo  # noqa: E402
from r1v2_jax.losses import ADVANTAGE_ESTIMATORS  # noqa: E402


@pytest.mark.parametrize("group_size", [5, 6, 7, 12])
def test_equal_reward_groups_get_exact_zero(group_size):
    """Continuous rewards: the fp32 group mean of G equal values is not always that value,
    and dividing the leftover by std + eps used to leak |A| up to ~1e-3."""
    values = np.array([0.1, 0.7, 1 / 3, 0.55, 2.3, 0.9], np.float32)
    rewards = np.repeat(values, group_size)
    naive = []
    for v in values:  # the leak the fix removes, measured with the old formula
        g = jnp.full((group_size,), v, jnp.float32)
        naive.append(float(jnp.max(jnp.abs((g - jnp.mean(g)) / (jnp.std(g, ddof=1) + 1e-4)))))
    assert max(naive) > 1e-5
    for name in ADVANTAGE_ESTIMATORS.names():
        if name == "reinforce_pp":
            continue  # batch whitening shifts every completion by the batch mean (verl too)
        adv = jit_call(ADVANTAGE_ESTIMATORS.get(name), jnp.asarray(rewards), group_size=group_size)
        assert np.all(np.asarray(adv) == 0.0), name
    mixed = rewards.copy()
    mixed[0] += 0.5  # one group not flat: its members are non-zero, the others stay exactly 0
    adv = np.asarray(jit_call(group_advantages, jnp.asarray(mixed), group_size=group_size))
    assert np.all(adv[:group_size] != 0) and np.all(adv[group_size:] == 0.0)


def test_rloo_and_dr_grpo_match_references():
    rewards = np.random.default_rng(3).normal(size=20)
    r32 = jnp.asarray(rewards, jnp.float32)
    got = jit_call(ADVANTAGE_ESTIMATORS.get("rloo"), r32, group_size=5)
    np.testing.assert_allclose(got, verl_rloo(torch.tensor(rewards), 5).numpy(), rtol=1e-5, atol=1e-6)
    got = jit_call(ADVANTAGE_ESTIMATORS.get("dr_grpo"), r32, group_size=5, scale="group")
    np.testing.assert_allclose(got, trl_advantages(torch.tensor(rewards), 5, "none").numpy(), rtol=1e-5,
                               atol=1e-6)
    got = jit_call(ADVANTAGE_ESTIMATORS.get("grpo"), r32, group_size=5, scale="batch")
    np.testing.assert_allclose(got, trl_advantages(torch.tensor(rewards), 5, "batch").numpy(), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("token_weighted", [False, True])
def test_reinforce_pp_matches_verl_baseline_whitening(token_weighted):
    rng = np.random.default_rng(4)
    rewards = rng.normal(size=12)
    lengths = rng.integers(1, 9, 12) if token_weighted else np.ones(12, np.int64)
    expected = verl_reinforce_pp_baseline(torch.tensor(rewards), 4, torch.tensor(lengths), 9).numpy()
    got = jit_call(ADVANTAGE_ESTIMATORS.get("reinforce_pp"), jnp.asarray(rewards, jnp.float32),
                   group_size=4, lengths=jnp.asarray(lengths, jnp.float32) if token_weighted else None)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_unknown_estimator_lists_registered_names():
    with pytest.raises(ValueError, match="dr_grpo, grpo, reinforce_pp, rloo"):
        ADVANTAGE_ESTIMATORS.get("gae", where="config.grpo.advantage_estimator")
