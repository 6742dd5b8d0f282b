"""GRPO loss properties: hand-computed cases, REINFORCE equivalence, masking, accumulation, jit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1v2_jax.losses import (
    LOSS_TYPES,
    accumulated_loss,
    grpo_loss,
    grpo_loss_terms,
    grpo_metrics,
    token_logprobs,
)

B, T, E, V = 8, 6, 5, 11
OPTIONS = ("loss_type", "eps_low", "eps_high", "dual_clip", "beta", "kl_estimator",
           "kl_bias_correction", "max_completion_length")
jit_grpo_loss = jax.jit(grpo_loss, static_argnames=OPTIONS)


@functools.cache
def tiny_policy(seed: int = 0):
    """A linear 'model': fixed hidden states, trainable LM head W; logps = token_logprobs."""
    rng = np.random.default_rng(seed)
    hidden = jnp.asarray(rng.normal(size=(B, T, E)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32)
    w = jnp.asarray(rng.normal(size=(E, V)) * 0.5, jnp.float32)
    logprobs = jax.jit(token_logprobs, static_argnames=("chunk_size",))
    old = logprobs(hidden, w + 0.3 * rng.normal(size=(E, V)).astype(np.float32), targets, chunk_size=4)
    ref = logprobs(hidden, w + 0.3 * rng.normal(size=(E, V)).astype(np.float32), targets, chunk_size=4)
    lengths = np.array([6, 2, 5, 1, 6, 3, 4, 6])
    mask = jnp.asarray(np.arange(T)[None] < lengths[:, None], jnp.float32)
    advantages = jnp.asarray(rng.normal(size=B), jnp.float32)

    def logps_of(params, start=0, size=B):
        rows = lambda x: jax.lax.dynamic_slice_in_dim(x, start, size)  # noqa: E731
        return token_logprobs(rows(hidden), params, rows(targets), chunk_size=4)

    return w, logps_of, old, ref, advantages, mask


# ---------------------------------------------------------------- hand-computed cases


def test_hand_computed_positive_and_negative_advantage():
    # ratios exp(logp - old): row 0 (A=+1): [1.5, 0.9]; row 1 (A=-1): [1.5, 0.7]; eps 0.2
    logps = jnp.log(jnp.array([[1.5, 0.9], [1.5, 0.7]]))
    old = jnp.zeros((2, 2))
    adv = jnp.array([1.0, -1.0])
    mask = jnp.ones((2, 2))
    # row 0: -min(1.5, 1.2) = -1.2, -min(0.9, 0.9) = -0.9 -> mean -1.05
    # row 1: -min(-1.5, -1.2) = 1.5, -min(-0.7, -0.8) = 0.8 -> mean 1.15
    loss, metrics = jit_grpo_loss(logps, old, None, adv, mask, loss_type="grpo")
    assert float(loss) == pytest.approx((-1.05 + 1.15) / 2, abs=1e-6)
    assert float(metrics["clip_frac_high"]) == pytest.approx(0.25)  # 1.5 > 1.2 with A > 0
    assert float(metrics["clip_frac_low"]) == pytest.approx(0.25)  # 0.7 < 0.8 with A < 0
    assert float(metrics["clip_frac"]) == pytest.approx(0.5)
    assert float(metrics["ratio_mean"]) == pytest.approx((1.5 + 0.9 + 1.5 + 0.7) / 4)
    # dual clip c = 1.3 caps row 1 token 0 at 1.3: row 1 mean (1.3 + 0.8) / 2
    loss, metrics = jit_grpo_loss(logps, old, None, adv, mask, dual_clip=1.3)
    assert float(loss) == pytest.approx((-1.05 + 1.05) / 2, abs=1e-6)
    assert float(metrics["dual_clip_frac"]) == pytest.approx(0.25)


def test_hand_computed_aggregations_and_kl():
    # per-token loss with rho == 1 is -A; rows: A = 2 (3 tokens), A = -1 (1 token)
    logps = jnp.log(jnp.full((2, 4), 0.5))
    mask = jnp.array([[1.0, 1, 1, 0], [1, 0, 0, 0]])
    adv = jnp.array([2.0, -1.0])
    expected = {
        "grpo": (-2.0 + 1.0) / 2,
        "bnpo": (-2.0 * 3 + 1.0) / 4,
        "dr_grpo": (-2.0 * 3 + 1.0) / (2 * 10),
        "dapo": (-2.0 * 3 + 1.0) / 4,
    }
    for loss_type, value in expected.items():
        loss, _ = jit_grpo_loss(logps, None, None, adv, mask, loss_type=loss_type, max_completion_length=10)
        assert float(loss) == pytest.approx(value, abs=1e-6), loss_type
    # k3 with ref = logp + log 2: d = log 2 -> exp(d) - d - 1 = 1 - log 2
    ref = logps + jnp.log(2.0)
    loss, metrics = jit_grpo_loss(logps, None, ref, adv, mask, loss_type="bnpo", beta=0.1)
    k3 = 1.0 - np.log(2.0)
    assert float(metrics["kl"]) == pytest.approx(k3, abs=1e-6)
    assert float(loss) == pytest.approx(expected["bnpo"] + 0.1 * k3, abs=1e-6)
    _, metrics = jit_grpo_loss(logps, None, ref, adv, mask, beta=0.1, kl_estimator="k1")
    assert float(metrics["kl"]) == pytest.approx(-np.log(2.0), abs=1e-6)
    _, metrics = jit_grpo_loss(logps, None, ref, adv, mask, beta=0.1, kl_estimator="k2")
    assert float(metrics["kl"]) == pytest.approx(0.5 * np.log(2.0) ** 2, abs=1e-6)
    assert float(metrics["entropy_proxy"]) == pytest.approx(np.log(2.0), abs=1e-6)
    assert float(metrics["num_tokens"]) == 4.0


# ---------------------------------------------------------------- gradient properties


def test_on_policy_grpo_gradient_is_reinforce_scaled_by_advantage():
    w, logps_of, _, _, adv, mask = tiny_policy()

    def grpo(params):
        return grpo_loss(logps_of(params), None, None, adv, mask, loss_type="grpo")[0]

    def reinforce(params):  # -(1/B) sum_b A_b * mean_t log pi(y_bt)
        seq_mean = jnp.sum(logps_of(params) * mask, axis=1) / jnp.sum(mask, axis=1)
        return -jnp.mean(adv * seq_mean)

    expected = jax.jit(jax.grad(reinforce))(w)
    np.testing.assert_allclose(jax.jit(jax.grad(grpo))(w), expected, rtol=1e-5, atol=1e-7)
    # same with an explicit old_logps equal to the current values (rho == 1 exactly)
    old = jax.lax.stop_gradient(logps_of(w))
    g = jax.jit(jax.grad(lambda p: grpo_loss(logps_of(p), old, None, adv, mask)[0]))(w)
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_zero_advantages_give_zero_policy_gradient(loss_type):
    w, logps_of, old, ref, _, mask = tiny_policy()
    zero = jnp.zeros((B,))
    kw = dict(loss_type=loss_type, max_completion_length=T, eps_high=0.28, dual_clip=2.0)
    g = jax.jit(jax.grad(lambda p: grpo_loss(logps_of(p), old, None, zero, mask, **kw)[0]))(w)
    assert np.all(np.asarray(g) == 0.0)
    # with a KL term only the KL gradient remains
    g_kl = jax.jit(jax.grad(lambda p: grpo_loss(logps_of(p), old, ref, zero, mask, beta=0.1, **kw)[0]))(w)
    assert np.abs(np.asarray(g_kl)).max() > 0


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_masked_tokens_get_zero_gradient_even_with_garbage(loss_type):
    _, _, old, ref, adv, mask = tiny_policy()
    logps = jnp.where(mask > 0, old + 0.1, 0.0)
    garbage = jnp.where(mask > 0, logps, jnp.array([[1e4, -1e30, jnp.inf, -jnp.inf, jnp.nan, 7.0]]))
    kw = dict(loss_type=loss_type, max_completion_length=T, beta=0.1, kl_bias_correction=True)
    loss_and_grad = jax.jit(jax.value_and_grad(lambda x: grpo_loss(x, old, ref, adv, mask, **kw)[0]))
    clean_loss, clean_grad = loss_and_grad(logps)
    loss, grad = loss_and_grad(garbage)
    assert float(loss) == float(clean_loss)
    np.testing.assert_array_equal(grad, clean_grad)
    assert np.all(np.asarray(grad)[np.asarray(mask) == 0] == 0.0)
    assert np.all(np.asarray(grad)[np.asarray(mask) > 0] != 0.0)


# ---------------------------------------------------------------- accumulation


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_four_micro_batches_equal_one_batch(loss_type):
    w, logps_of, old, ref, adv, mask = tiny_policy(seed=1)
    iw = jnp.linspace(0.5, 1.0, B)
    kw = dict(loss_type=loss_type, max_completion_length=T, beta=0.05, eps_high=0.28, dual_clip=2.5,
              kl_bias_correction=True)

    def full(params):
        return grpo_loss(logps_of(params), old, ref, adv, mask, importance_weights=iw, **kw)

    (full_loss, full_metrics), full_grad = jax.jit(jax.value_and_grad(full, has_aux=True))(w)

    @jax.jit
    def micro_step(params, start):
        def micro(p):
            take = lambda x: jax.lax.dynamic_slice_in_dim(x, start, 2)  # noqa: E731
            num, den, sums = grpo_loss_terms(logps_of(p, start, 2), take(old), take(ref), take(adv),
                                             take(mask),
                                             importance_weights=take(iw), **kw)
            return num, (den, sums)
        return jax.value_and_grad(micro, has_aux=True)(params)

    num_total, den_total, grad_total, sums_total = 0.0, 0.0, 0.0, None
    for i in range(4):
        (num, (den, sums)), grad = micro_step(w, 2 * i)
        num_total, den_total, grad_total = num_total + num, den_total + den, grad_total + grad
        sums_total = sums if sums_total is None else jax.tree.map(jnp.add, sums_total, sums)

    np.testing.assert_allclose(accumulated_loss(num_total, den_total), full_loss, rtol=1e-5)
    np.testing.assert_allclose(grad_total / jnp.maximum(den_total, 1.0), full_grad, rtol=1e-4, atol=1e-7)
    for key, value in grpo_metrics(sums_total).items():
        np.testing.assert_allclose(value, full_metrics[key], rtol=1e-5, err_msg=key)


def test_dapo_micro_losses_with_global_token_count_add_up():
    """TRL-style: each micro-batch divides by num_items_in_batch; their sum is the batch loss."""
    w, logps_of, old, _, adv, mask = tiny_policy(seed=2)
    full_loss, full_grad = jax.jit(jax.value_and_grad(
        lambda p: grpo_loss(logps_of(p), old, None, adv, mask, loss_type="dapo")[0]))(w)
    total = jnp.sum(mask)

    @jax.jit
    def micro_step(params, start):
        take = lambda x: jax.lax.dynamic_slice_in_dim(x, start, 2)  # noqa: E731
        return jax.value_and_grad(lambda p: grpo_loss(
            logps_of(p, start, 2), take(old), None, take(adv), take(mask), loss_type="dapo",
            num_items_in_batch=total)[0])(params)

    loss_sum, grad_sum = 0.0, 0.0
    for i in range(4):
        loss, grad = micro_step(w, 2 * i)
        loss_sum, grad_sum = loss_sum + loss, grad_sum + grad
    np.testing.assert_allclose(loss_sum, full_loss, rtol=1e-5)
    np.testing.assert_allclose(grad_sum, full_grad, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- jit and errors


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_jit_traces_once_for_fixed_shapes(loss_type):
    traces = []

    def step(logps, old, ref, adv, mask):
        traces.append(1)
        return grpo_loss(logps, old, ref, adv, mask, loss_type=loss_type, beta=0.04,
                         max_completion_length=T, dual_clip=3.0)

    jitted = jax.jit(jax.value_and_grad(lambda *a: step(*a)[0]))
    _, _, old, ref, adv, mask = tiny_policy()
    for shift in (0.0, 0.1, -0.2):
        jitted(old + shift, old, ref, adv * (1 + shift), mask)
    assert len(traces) == 1


def test_bad_options_raise_clear_errors():
    x = jnp.zeros((2, 3))
    adv, mask = jnp.zeros((2,)), jnp.ones((2, 3))
    cases = [
        (dict(loss_type="sum"), "loss_type"),
        (dict(beta=0.1), "ref_logps"),
        (dict(loss_type="dr_grpo"), "max_completion_length"),
        (dict(dual_clip=0.9), "dual_clip"),
        (dict(kl_estimator="k4"), "kl_estimator"),
        (dict(eps_low=jnp.float32(0.2)), "eps_low"),
    ]
    for options, word in cases:
        with pytest.raises(ValueError, match=word):
            grpo_loss(x, x, None, adv, mask, **options)
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(x, x, None, jnp.zeros((3,)), mask)
    with pytest.raises(ValueError, match="mask"):
        grpo_loss(x, x, None, adv, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="num_items_in_batch"):
        grpo_loss(x, x, None, adv, mask, loss_type="grpo", num_items_in_batch=4.0)
