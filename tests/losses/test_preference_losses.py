"""DPO / BCO pair / SFT / MPO vs TRL 0.21 (re-expressed in torch), and the reward-model loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from _loss_references import TrlRunningMoments, jit_call, trl_dpo_loss, trl_mpo_step, trl_reward_loss
from r1v2_jax.losses import (
    bco_delta_init,
    bco_pair_loss,
    dpo_loss,
    mpo_loss,
    reward_model_loss,
    sft_loss,
)


def softplus(x):
    return float(np.log1p(np.exp(x)))


def test_dpo_hand_computed():
    # z = 0.5 * ((-1 + 3) - (-2 + 2)) = 1 -> loss = log(1 + e^-1)
    args = [jnp.array([-1.0]), jnp.array([-3.0]), jnp.array([-2.0]), jnp.array([-2.0])]
    loss, metrics = jit_call(dpo_loss, *args, beta=0.5)
    assert float(loss) == pytest.approx(softplus(-1.0), rel=1e-6)
    assert float(metrics["rewards_chosen"]) == pytest.approx(0.5)
    assert float(metrics["rewards_rejected"]) == pytest.approx(-0.5)
    assert float(metrics["margins"]) == pytest.approx(1.0)
    assert float(metrics["accuracy"]) == 1.0
    loss, _ = jit_call(dpo_loss, *args, beta=0.5, label_smoothing=0.1)
    assert float(loss) == pytest.approx(0.9 * softplus(-1.0) + 0.1 * softplus(1.0), rel=1e-6)


def test_bco_pair_hand_computed_two_steps():
    state = bco_delta_init()
    assert float(state.mean) == 0.0 and float(state.count) == pytest.approx(1e-24)
    # step 1: beta*Delta_c = 0.5, beta*Delta_r = -0.5 -> x = 0 -> delta = 0
    bco = jax.jit(lambda *a: bco_pair_loss(*a, beta=0.5))
    a = jnp.array
    loss, state, metrics = bco(a([-1.0]), a([-3.0]), a([-2.0]), a([-2.0]), state)
    assert float(loss) == pytest.approx(2 * softplus(-0.5), rel=1e-6)
    assert float(metrics["delta"]) == 0.0 and float(state.count) == pytest.approx(1.0)
    # step 2: beta*Delta_c = 1, beta*Delta_r = 0 -> x = 0.5 -> delta = (0 * 1 + 0.5) / 2 = 0.25
    loss, state, metrics = bco(a([0.0]), a([-2.0]), a([-2.0]), a([-2.0]), state)
    assert float(metrics["delta"]) == pytest.approx(0.25)
    assert float(loss) == pytest.approx(softplus(-0.75) + softplus(-0.25), rel=1e-6)
    assert float(state.mean) == pytest.approx(0.25) and float(state.count) == pytest.approx(2.0)


def test_dpo_matches_trl_loss_and_gradient():
    rng = np.random.default_rng(0)
    c, r, rc, rr = (rng.normal(-20, 5, 8) for _ in range(4))
    tc, tr = torch.tensor(c, requires_grad=True), torch.tensor(r, requires_grad=True)
    expected = trl_dpo_loss(tc, tr, torch.tensor(rc), torch.tensor(rr), "sigmoid", beta=0.1,
                            label_smoothing=0.2, running=None, nll_loss=None).mean()
    expected.backward()
    (loss, _), grads = jit_call(jax.value_and_grad(
        lambda a, b: dpo_loss(a, b, jnp.asarray(rc), jnp.asarray(rr), beta=0.1, label_smoothing=0.2),
        argnums=(0, 1), has_aux=True), jnp.asarray(c, jnp.float32), jnp.asarray(r, jnp.float32))
    np.testing.assert_allclose(loss, expected.item(), rtol=1e-5)
    np.testing.assert_allclose(grads[0], tc.grad.numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(grads[1], tr.grad.numpy(), rtol=1e-4, atol=1e-7)


def test_sft_loss_hand_computed():
    logps = jnp.array([[-1.0, -2.0, 99.0], [-3.0, jnp.nan, 5.0]])
    mask = jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    loss, metrics = jit_call(sft_loss, logps, mask)
    assert float(loss) == pytest.approx(2.0) and float(metrics["num_tokens"]) == 3.0
    loss, _ = jit_call(sft_loss, logps, mask, num_items_in_batch=12.0)
    assert float(loss) == pytest.approx(0.5)


def test_mpo_hand_computed():
    # chosen tokens [-0.4, -0.6] (sum -1), rejected [-3]; refs -2, -2; beta 0.5: the cases above
    chosen, chosen_mask = jnp.array([[-0.4, -0.6, 50.0]]), jnp.array([[1.0, 1.0, 0.0]])
    rejected, rejected_mask = jnp.array([[-3.0, 50.0, 50.0]]), jnp.array([[1.0, 0.0, 0.0]])
    loss, state, metrics = jax.jit(lambda *a: mpo_loss(*a, beta=0.5))(
        chosen, chosen_mask, rejected, rejected_mask, jnp.array([-2.0]), jnp.array([-2.0]), bco_delta_init())
    pref, qual, gen = softplus(-1.0), 2 * softplus(-0.5), 0.5  # gen: mean NLL of 0.4 and 0.6
    assert float(metrics["loss_pref"]) == pytest.approx(pref, rel=1e-6)
    assert float(metrics["loss_qual"]) == pytest.approx(qual, rel=1e-6)
    assert float(metrics["loss_gen"]) == pytest.approx(gen, rel=1e-6)
    assert float(loss) == pytest.approx(0.8 * pref + 0.2 * qual + 1.0 * gen, rel=1e-6)
    assert float(state.count) == pytest.approx(1.0) and float(metrics["delta"]) == 0.0


@pytest.mark.parametrize("weights,label_smoothing", [((0.8, 0.2, 1.0), 0.0), ((0.5, 1.5, 0.3), 0.1)])
def test_mpo_matches_trl_over_consecutive_steps(weights, label_smoothing):
    rng = np.random.default_rng(42)
    b, tc, tr, beta = 4, 9, 7, 0.1
    running = TrlRunningMoments()
    state = bco_delta_init()

    @jax.jit
    def step(chosen_tok, chosen_mask, rejected_tok, rejected_mask, ref_c, ref_r, state):
        def loss_fn(ct, rt):
            loss, new_state, metrics = mpo_loss(ct, chosen_mask, rt, rejected_mask, ref_c, ref_r, state,
                                                beta=beta, weights=weights, label_smoothing=label_smoothing)
            return loss, (new_state, metrics)
        return jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(chosen_tok, rejected_tok)

    deltas = []
    for k in range(4):  # the policy drifts away from the reference: delta moves every step
        mask_c = (np.arange(tc)[None] < rng.integers(1, tc + 1, b)[:, None]).astype(np.float64)
        mask_r = (np.arange(tr)[None] < rng.integers(1, tr + 1, b)[:, None]).astype(np.float64)
        chosen_tok = -np.abs(rng.normal(1.0, 0.5, (b, tc))) + 0.3 * k
        rejected_tok = -np.abs(rng.normal(1.5, 0.5, (b, tr))) - 0.2 * k
        ref_c = (-np.abs(rng.normal(1.0, 0.5, (b, tc))) * mask_c).sum(-1)
        ref_r = (-np.abs(rng.normal(1.5, 0.5, (b, tr))) * mask_r).sum(-1)

        t_c = torch.tensor(chosen_tok, requires_grad=True)
        t_r = torch.tensor(rejected_tok, requires_grad=True)
        expected = trl_mpo_step(t_c, torch.tensor(mask_c), t_r, torch.tensor(mask_r), torch.tensor(ref_c),
                                torch.tensor(ref_r), beta=beta, weights=weights,
                                label_smoothing=label_smoothing, running=running)
        expected.backward()

        f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
        (loss, (state, metrics)), (g_c, g_r) = step(f32(chosen_tok), f32(mask_c), f32(rejected_tok),
                                                    f32(mask_r), f32(ref_c), f32(ref_r), state)
        np.testing.assert_allclose(loss, expected.item(), rtol=1e-5, err_msg=f"step {k}")
        np.testing.assert_allclose(g_c, t_c.grad.numpy(), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(g_r, t_r.grad.numpy(), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(metrics["delta"], running.mean, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(state.mean, running.mean, rtol=1e-5, atol=1e-7)
        assert float(state.count) == pytest.approx(running.count)

        delta_c = beta * ((chosen_tok * mask_c).sum(-1) - ref_c)
        delta_r = beta * ((rejected_tok * mask_r).sum(-1) - ref_r)
        np.testing.assert_allclose(metrics["rewards_chosen"], delta_c.mean(), rtol=1e-5)
        np.testing.assert_allclose(metrics["rewards_rejected"], delta_r.mean(), rtol=1e-5)
        np.testing.assert_allclose(metrics["margins"], (delta_c - delta_r).mean(), rtol=1e-5)
        np.testing.assert_allclose(metrics["accuracy"], (delta_c > delta_r).mean())
        nll = -(chosen_tok * mask_c).sum() / mask_c.sum()
        np.testing.assert_allclose(metrics["loss_gen"], nll, rtol=1e-5)
        terms = (metrics["loss_pref"], metrics["loss_qual"], metrics["loss_gen"])
        total = sum(w * term for w, term in zip(weights, terms))
        np.testing.assert_allclose(total, loss, rtol=1e-5)
        deltas.append(float(metrics["delta"]))
    assert len(set(np.round(deltas, 6))) == 4


def test_mpo_traces_once_and_checks_inputs():
    traces = []

    def fn(ct, cm, rt, rm, rc, rr, state):
        traces.append(1)
        return mpo_loss(ct, cm, rt, rm, rc, rr, state)

    jitted = jax.jit(fn)
    ones, state = jnp.ones((2, 3)), bco_delta_init()
    for shift in (0.0, -1.0, -2.0):
        _, state, _ = jitted(ones * shift, ones, ones * shift - 1, ones, jnp.zeros(2), jnp.zeros(2), state)
    assert len(traces) == 1 and float(state.count) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="chosen_mask"):
        mpo_loss(ones, jnp.ones((2, 4)), ones, ones, jnp.zeros(2), jnp.zeros(2), state)
    with pytest.raises(ValueError, match="weights"):
        mpo_loss(ones, ones, ones, ones, jnp.zeros(2), jnp.zeros(2), state, weights=(1.0, 1.0))


def test_reward_model_loss_hand_computed_and_trl():
    loss, metrics = jit_call(reward_model_loss, jnp.array([2.0, 0.0]), jnp.array([1.0, 1.0]))
    assert float(loss) == pytest.approx((softplus(-1.0) + softplus(1.0)) / 2, rel=1e-6)
    assert float(metrics["accuracy"]) == 0.5 and float(metrics["margin"]) == pytest.approx(0.0)
    loss, _ = jax.jit(reward_model_loss)(jnp.array([2.0]), jnp.array([1.0]), margin=jnp.array([1.0]))
    assert float(loss) == pytest.approx(np.log(2.0), rel=1e-6)

    rng = np.random.default_rng(3)
    c, r, m = rng.normal(size=6), rng.normal(size=6), rng.uniform(0, 1, 6)
    tc = torch.tensor(c, requires_grad=True)
    expected = trl_reward_loss(tc, torch.tensor(r), torch.tensor(m), center_rewards_coefficient=0.01)
    expected.backward()
    (got, _), grad = jit_call(jax.value_and_grad(
        lambda x: reward_model_loss(x, jnp.asarray(r), margin=jnp.asarray(m),
                                    center_rewards_coefficient=0.01),
        has_aux=True), jnp.asarray(c, jnp.float32))
    np.testing.assert_allclose(got, expected.item(), rtol=1e-5)
    np.testing.assert_allclose(grad, tc.grad.numpy(), rtol=1e-4, atol=1e-7)
