"""The registered estimator wrappers (dr_grpo, rloo, reinforce_pp) called with their own
keyword defaults, at the group sizes where their branches change, and on bad input.
Expected values are written out by hand (NumPy only for the square roots)."""

import jax.numpy as jnp
import numpy as np
import pytest

from r1v2_jax.losses import dr_grpo_advantages, reinforce_pp_advantages, rloo_advantages

R = jnp.asarray([1.0, 3.0, 0.0, 4.0], jnp.float32)  # two groups of 2: means 2 and 2


def test_dr_grpo_defaults_centre_without_scaling():
    # c = r - group mean; no std division whatever `scale` says
    np.testing.assert_allclose(dr_grpo_advantages(R, 2), [-1.0, 1.0, -2.0, 2.0], atol=1e-7)
    np.testing.assert_allclose(dr_grpo_advantages(R, 2, scale="group"), [-1.0, 1.0, -2.0, 2.0],
                               atol=1e-7)


def test_rloo_defaults_are_unscaled_leave_one_out():
    # G = 2: the baseline of each member is the other one: r_i - r_j
    np.testing.assert_allclose(rloo_advantages(R, 2), [-2.0, 2.0, -4.0, 4.0], atol=1e-7)
    # scale="group", ddof 1: group stds sqrt(2) and 2*sqrt(2), plus eps 1e-4
    got = rloo_advantages(R, 2, scale="group")
    s = np.sqrt(2.0)
    np.testing.assert_allclose(got, [-2 / (s + 1e-4), 2 / (s + 1e-4), -4 / (2 * s + 1e-4),
                                     4 / (2 * s + 1e-4)], rtol=1e-6)


def test_reinforce_pp_group_size_one_whitens_the_raw_rewards():
    # G = 1: no group baseline; c = r = [1, 2, 4, 7], mean 3.5, unbiased var 21/3 = 7
    r = jnp.asarray([1.0, 2.0, 4.0, 7.0], jnp.float32)
    expected = (np.array([1.0, 2.0, 4.0, 7.0]) - 3.5) / np.sqrt(7.0 + 1e-8)
    np.testing.assert_allclose(reinforce_pp_advantages(r, 1), expected, rtol=1e-6)


def test_reinforce_pp_group_size_two_centres_then_whitens():
    # groups [1, 3] and [4, 8] (means 2 and 6, so skipping the centring shows):
    # c = [-1, 1, -2, 2], mean 0, unbiased var (1+1+4+4)/3 = 10/3; scale/std_ddof are ignored
    r = jnp.asarray([1.0, 3.0, 4.0, 8.0], jnp.float32)
    expected = np.array([-1.0, 1.0, -2.0, 2.0]) / np.sqrt(10 / 3 + 1e-8)
    np.testing.assert_allclose(reinforce_pp_advantages(r, 2), expected, rtol=1e-6)
    np.testing.assert_allclose(reinforce_pp_advantages(r, 2, scale="group", std_ddof=0), expected,
                               rtol=1e-6)


def test_reinforce_pp_eps_is_added_to_the_variance():
    # a tiny variance (c = +-1e-3, var 4e-6/3) makes eps visible: eps=1e-6 vs the default 1e-8
    r = jnp.asarray([0.0, 2e-3, 0.0, 2e-3], jnp.float32)
    var = 4e-6 / 3
    c = np.array([-1e-3, 1e-3, -1e-3, 1e-3])
    np.testing.assert_allclose(reinforce_pp_advantages(r, 2), c / np.sqrt(var + 1e-8), rtol=1e-4)
    np.testing.assert_allclose(reinforce_pp_advantages(r, 2, eps=1e-6), c / np.sqrt(var + 1e-6),
                               rtol=1e-4)


@pytest.mark.parametrize("args,kw,message", [
    ((R, 3), {}, "reinforce_pp_advantages: rewards length 4 is not a multiple of group_size 3"),
    ((R.reshape(2, 2), 2), {}, "reinforce_pp_advantages: rewards must have 1 dims, got shape (2, 2)"),
    ((R, 2), dict(eps=jnp.float32(1e-8)),
     "reinforce_pp_advantages: eps must be a Python float (a static option), got ArrayImpl"),
])
def test_reinforce_pp_bad_input_names_the_function(args, kw, message):
    with pytest.raises(ValueError) as err:
        reinforce_pp_advantages(*args, **kw)
    assert str(err.value) == message
