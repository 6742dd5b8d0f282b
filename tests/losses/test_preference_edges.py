"""DPO / BCO pair / MPO: keyword defaults (beta 0.1, MPO weights 0.8/0.2/1.0) by hand,
padding that holds -inf, ties, and the exact messages of every argument check."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1v2_jax.losses import bco_delta_init, bco_pair_loss, dpo_loss, mpo_loss, sequence_logps


def softplus(x):
    return math.log1p(math.exp(x))


A = jnp.asarray


def test_dpo_and_bco_default_beta_is_a_tenth():
    # Delta_c = -1 - (-3) = 2, Delta_r = -4 - (-3) = -1: z = 0.1 * 3 = 0.3
    args = (A([-1.0]), A([-4.0]), A([-3.0]), A([-3.0]))
    loss, m = dpo_loss(*args)
    assert float(loss) == pytest.approx(softplus(-0.3), rel=1e-6)
    assert float(m["rewards_chosen"]) == pytest.approx(0.2)
    assert float(m["rewards_rejected"]) == pytest.approx(-0.1)
    # BCO: rewards 0.2 / -0.1, x = 0.05 = delta after the first update
    loss, state, m = bco_pair_loss(*args, bco_delta_init())
    assert float(m["delta"]) == pytest.approx(0.05)
    assert float(loss) == pytest.approx(softplus(-0.15) + softplus(-0.15), rel=1e-6)
    assert float(state.count) == pytest.approx(1.0)


def test_tied_rewards_are_not_counted_accurate():
    _, m = dpo_loss(A([-1.0, -1.0]), A([-1.0, -2.0]), A([0.0, 0.0]), A([0.0, 0.0]), beta=1.0)
    assert float(m["accuracy"]) == 0.5  # the tie (pair 0) is not a win
    assert float(m["margins"]) == pytest.approx(0.5)


def test_mpo_defaults_by_hand_with_minus_inf_padding():
    # chosen tokens [-1, -2 | pad], rejected [-3 | pad, pad]; padding log-probs are -inf
    ct = A([[-1.0, -2.0, -np.inf]])
    cm = A([[1, 1, 0]])
    rt = A([[-3.0, -np.inf, -np.inf]])
    rm = A([[1, 0, 0]])
    np.testing.assert_allclose(sequence_logps(ct, cm), [-3.0])
    np.testing.assert_allclose(sequence_logps(rt, rm), [-3.0])
    loss, state, m = mpo_loss(ct, cm, rt, rm, A([-2.5]), A([-2.0]), bco_delta_init())
    # Delta_c = -0.5, Delta_r = -1: DPO z = 0.1 * 0.5 = 0.05
    # BCO: rewards -0.05 / -0.1, delta = x = -0.075: softplus(-0.025) twice
    # SFT: token mean NLL over the chosen tokens (1 + 2) / 2 = 1.5
    pref, qual, gen = softplus(-0.05), 2 * softplus(-0.025), 1.5
    assert float(m["loss_pref"]) == pytest.approx(pref, rel=1e-6)
    assert float(m["loss_qual"]) == pytest.approx(qual, rel=1e-6)
    assert float(m["loss_gen"]) == pytest.approx(gen, rel=1e-6)
    assert float(m["delta"]) == pytest.approx(-0.075, rel=1e-6)
    assert float(loss) == pytest.approx(0.8 * pref + 0.2 * qual + 1.0 * gen, rel=1e-6)
    assert float(state.mean) == pytest.approx(-0.075, rel=1e-6)
    # the reference log-probs get no gradient (stop_gradient), the policy ones do
    grads = jax.grad(lambda c, r: mpo_loss(ct, cm, rt, rm, c, r, bco_delta_init())[0],
                     argnums=(0, 1))(A([-2.5]), A([-2.0]))
    assert float(grads[0][0]) == 0.0 and float(grads[1][0]) == 0.0


def test_mpo_label_smoothing_and_beta_reach_the_dpo_term():
    ct, cm = A([[-1.0, -2.0]]), A([[1, 1]])
    rt, rm = A([[-3.0, -1.0]]), A([[1, 0]])
    _, _, m = mpo_loss(ct, cm, rt, rm, A([-2.5]), A([-2.0]), bco_delta_init(), beta=0.5,
                       label_smoothing=0.2)
    z = 0.5 * 0.5
    assert float(m["loss_pref"]) == pytest.approx(0.8 * softplus(-z) + 0.2 * softplus(z), rel=1e-6)


V1 = A([-1.0, -2.0])


@pytest.mark.parametrize("call,message", [
    (lambda: dpo_loss(V1, V1, V1, V1, beta=0.0), "dpo_loss: beta must be > 0, got 0.0"),
    (lambda: dpo_loss(V1, V1, V1, V1, beta=jnp.float32(0.1)),
     "dpo_loss: beta must be a Python float (a static option), got ArrayImpl"),
    (lambda: dpo_loss(V1, V1, V1, V1, label_smoothing=0.5),
     "dpo_loss: label_smoothing must be in [0, 0.5), got 0.5"),
    (lambda: dpo_loss(V1, V1, V1, V1, label_smoothing=-0.1),
     "dpo_loss: label_smoothing must be in [0, 0.5), got -0.1"),
    (lambda: dpo_loss(V1, V1, V1, V1, label_smoothing=jnp.float32(0.1)),
     "dpo_loss: label_smoothing must be a Python float (a static option), got ArrayImpl"),
    (lambda: dpo_loss(V1[None], V1, V1, V1), "dpo_loss: chosen_logps must have 1 dims, got shape (1, 2)"),
    (lambda: dpo_loss(V1, V1[:1], V1, V1), "dpo_loss: rejected_logps must have shape (2,), got (1,)"),
    (lambda: dpo_loss(V1, V1, V1[:1], V1), "dpo_loss: ref_chosen_logps must have shape (2,), got (1,)"),
    (lambda: dpo_loss(V1, V1, V1, V1[:1]), "dpo_loss: ref_rejected_logps must have shape (2,), got (1,)"),
    (lambda: bco_pair_loss(V1, V1, V1, V1, bco_delta_init(), beta=-1.0),
     "bco_pair_loss: beta must be > 0, got -1.0"),
])
def test_pair_losses_name_the_function_and_argument(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == message


def test_smallest_valid_pair_options_are_accepted():
    loss, _ = dpo_loss(V1, V1, V1, V1, beta=1e-6, label_smoothing=0.0)
    assert float(loss) == pytest.approx(math.log(2.0), rel=1e-6)


T23, T24, Z2 = jnp.zeros((2, 3)), jnp.zeros((2, 4)), jnp.zeros(2)


@pytest.mark.parametrize("call,message", [
    (lambda: mpo_loss(Z2, Z2, T23, T23, Z2, Z2, bco_delta_init()),
     "mpo_loss: policy_chosen_logps_tok must have 2 dims, got shape (2,)"),
    (lambda: mpo_loss(T23, T23, Z2, Z2, Z2, Z2, bco_delta_init()),
     "mpo_loss: policy_rejected_logps_tok must have 2 dims, got shape (2,)"),
    (lambda: mpo_loss(T23, T24, T23, T23, Z2, Z2, bco_delta_init()),
     "mpo_loss: chosen_mask must have shape (2, 3), got (2, 4)"),
    (lambda: mpo_loss(T23, T23, T24, T23, Z2, Z2, bco_delta_init()),
     "mpo_loss: rejected_mask must have shape (2, 4), got (2, 3)"),
    (lambda: mpo_loss(T23, T23, T24[:1], T24[:1], Z2, Z2, bco_delta_init()),
     "mpo_loss: chosen and rejected batch sizes differ: 2 vs 1"),
    (lambda: mpo_loss(T23, T23, T23, T23, Z2, Z2, bco_delta_init(), weights=(1.0, 1.0, 1.0, 1.0)),
     "mpo_loss: weights must be (w_pref, w_qual, w_gen), got (1.0, 1.0, 1.0, 1.0)"),
    (lambda: mpo_loss(T23, T23, T23, T23, Z2, Z2, bco_delta_init(),
                      weights=(1.0, jnp.float32(1.0), 1.0)),
     "mpo_loss: weights must be a Python float (a static option), got ArrayImpl"),
])
def test_mpo_names_the_argument(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == message


def test_mpo_accepts_different_chosen_and_rejected_lengths():
    loss, _, m = mpo_loss(T23, jnp.ones((2, 3)), T24, jnp.ones((2, 4)), Z2, Z2, bco_delta_init(),
                          weights=(1.0, 0.0, 0.0))
    assert float(loss) == pytest.approx(math.log(2.0), rel=1e-6)  # z = 0: log 2
