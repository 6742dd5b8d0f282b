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
