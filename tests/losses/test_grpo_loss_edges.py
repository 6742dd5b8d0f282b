"""GRPO loss at its edges, values by hand: one token (every denominator clamp at 1), zero
advantages (never counted as clipped, for every policy loss), a tracked KL that overflows
while beta = 0 (it must not reach the loss)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from r1v2_jax.losses import LOSS_TYPES, grpo_loss, kl_estimate

LOG = lambda *p: jnp.log(jnp.asarray(p, jnp.float32))  # noqa: E731


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_a_single_token_batch(loss_type):
    # rho = 1.5, A = +1, eps 0.2: l = -min(1.5, 1.2) = -1.2 over 1 token, 1 sequence
    loss, metrics = grpo_loss(LOG([1.5]), jnp.zeros((1, 1)), None, jnp.asarray([1.0]),
                              jnp.ones((1, 1)), loss_type=loss_type, max_completion_length=1)
    assert float(loss) == pytest.approx(-1.2, abs=1e-6)
    assert float(metrics["ratio_mean"]) == pytest.approx(1.5, abs=1e-6)
    assert float(metrics["entropy_proxy"]) == pytest.approx(-np.log(1.5), abs=1e-6)
    assert float(metrics["clip_frac_high"]) == 1.0 and float(metrics["clip_frac"]) == 1.0
    assert float(metrics["num_tokens"]) == 1.0 and float(metrics["num_sequences"]) == 1.0


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_a_fully_masked_batch_is_zero_not_nan(loss_type):
    loss, metrics = grpo_loss(LOG([1.5, 0.5]), jnp.zeros((1, 2)), None, jnp.asarray([1.0]),
                              jnp.zeros((1, 2)), loss_type=loss_type, max_completion_length=2)
    assert float(loss) == 0.0
    assert all(float(v) == 0.0 for k, v in metrics.items() if k != "num_sequences")


# rows: A = +1, A = 0, A = -1; each with ratios 0.5 and 1.5 (outside [0.8, 1.2] both)
_LOGPS = jnp.log(jnp.asarray([[0.5, 1.5]] * 3, jnp.float32))
_ADV = jnp.asarray([1.0, 0.0, -1.0])


@pytest.mark.parametrize("policy_loss, options, low, high", [
    ("grpo", {}, 1, 1),  # 0.5 with A < 0; 1.5 with A > 0
    ("clip_cov", dict(cov_selection=jnp.zeros((3, 2))), 1, 1),
    ("cispo", dict(cispo_max=1.2), 0, 1),  # rho > cispo_max with A > 0
    ("gmpo", {}, 2, 2),  # |log 0.5|, log 1.5 > 0.2: both log-ratios clipped in a row
])
def test_zero_advantage_tokens_are_never_counted_as_clipped(policy_loss, options, low, high):
    _, metrics = grpo_loss(_LOGPS, jnp.zeros((3, 2)), None, _ADV, jnp.ones((3, 2)),
                           policy_loss=policy_loss, **options)
    assert float(metrics["clip_frac_low"]) == pytest.approx(low / 6)
    assert float(metrics["clip_frac_high"]) == pytest.approx(high / 6)
    assert float(metrics["clip_frac"]) == pytest.approx((low + high) / 6)


def test_dual_clip_fraction_counts_negative_advantages_above_the_cap():
    # A = -1 row: rho 0.5 -> max(rho, clip) = 0.8; rho 4 -> 4 > c = 3: one token of 6
    logps = jnp.log(jnp.asarray([[4.0, 0.5], [4.0, 0.5], [4.0, 0.5]], jnp.float32))
    loss, metrics = grpo_loss(logps, jnp.zeros((3, 2)), None, _ADV, jnp.ones((3, 2)),
                              dual_clip=3.0)
    assert float(metrics["dual_clip_frac"]) == pytest.approx(1 / 6)
    # per row (grpo mean over 2 tokens): A=+1: -(1.2 + 0.5) / 2; A=0: 0;
    # A=-1: min(-A max(rho, clip(rho)), -c A) = min(4, 3) = 3 and 0.8 -> (3 + 0.8) / 2
    assert float(loss) == pytest.approx((-(1.2 + 0.5) / 2 + (3 + 0.8) / 2) / 3, abs=1e-6)


def test_a_tracked_kl_that_overflows_stays_out_of_the_loss_at_beta_zero():
    # ref - logp = 100: k3 = exp(100) - 101 = inf in fp32; logged, not added (beta = 0)
    logps = jnp.zeros((1, 2))
    ref = jnp.asarray([[100.0, 0.0]])
    loss, metrics = grpo_loss(logps, logps, ref, jnp.asarray([1.0]), jnp.ones((1, 2)), beta=0.0)
    assert float(loss) == pytest.approx(-1.0, abs=1e-6)  # rho = 1, A = 1
    assert np.isinf(float(metrics["kl"]))


def test_kl_estimate_by_hand():
    # d = ref - logp = 0.5 and -1: k1 = -d, k2 = d^2 / 2, k3 = e^d - d - 1
    logps, ref = jnp.asarray([-1.5, -0.25]), jnp.asarray([-1.0, -1.25])
    d = np.array([0.5, -1.0])
    for name, expected in (("k1", -d), ("k2", d ** 2 / 2), ("k3", np.exp(d) - d - 1)):
        np.testing.assert_allclose(kl_estimate(logps, ref, name), expected, rtol=1e-6)
    with pytest.raises(ValueError, match=r"^kl_estimate: estimator='k0' is not one of "
                                         r"\['k1', 'k2', 'k3'\]$"):
        kl_estimate(logps, ref, "k0")


@pytest.mark.parametrize("policy_loss", ["grpo", "gmpo", "sapo", "cispo"])
def test_per_token_advantages_constant_in_a_row_equal_per_row_ones(policy_loss):
    """[B, T] advantages equal to the row's [B] value on its tokens (garbage on padding)
    give the same loss and metrics; gmpo averages them over the row's tokens (a row of
    one token and an empty row included)."""
    rng = np.random.default_rng(4)
    logps = rng.normal(-1.0, 0.3, (4, 5)).astype(np.float32)
    old = (logps + rng.normal(0.0, 0.3, (4, 5))).astype(np.float32)
    mask = (np.arange(5)[None] < np.array([5, 1, 3, 0])[:, None]).astype(np.float32)
    adv = np.array([0.7, -1.2, 0.4, 0.9], np.float32)
    per_token = np.where(mask > 0, adv[:, None], 50.0).astype(np.float32)
    args = (jnp.asarray(logps), jnp.asarray(old), None)
    row_loss, row_m = grpo_loss(*args, jnp.asarray(adv), jnp.asarray(mask), policy_loss=policy_loss)
    tok_loss, tok_m = grpo_loss(*args, jnp.asarray(per_token), jnp.asarray(mask),
                                policy_loss=policy_loss)
    assert abs(float(row_loss)) > 1e-3
    np.testing.assert_allclose(float(tok_loss), float(row_loss), rtol=1e-6)
    for key in row_m:
        np.testing.assert_allclose(float(tok_m[key]), float(row_m[key]), rtol=1e-6, err_msg=key)


@pytest.mark.parametrize("policy_loss, options", [
    ("grpo", {}), ("clip_cov", dict(cov_selection=jnp.zeros((2, 2)))),
    ("cispo", dict(cispo_max=2.0)),
])
def test_a_ratio_exactly_on_a_clip_bound_is_not_clipped(policy_loss, options):
    """Bounds 1 - 0.5 and 1 + 1.0 (exact in fp32, as exp(log 0.5) and exp(log 2) are): TRL
    counts rho < 1 - eps_low and rho > 1 + eps_high (cispo: rho > cispo_max), strictly."""
    logps = jnp.log(jnp.asarray([[2.0, 0.5], [0.5, 2.0]], jnp.float32))
    _, metrics = grpo_loss(logps, jnp.zeros((2, 2)), None, jnp.asarray([1.0, -1.0]),
                           jnp.ones((2, 2)), policy_loss=policy_loss, eps_low=0.5, eps_high=1.0,
                           **options)
    assert float(metrics["ratio_mean"]) == 1.25  # the ratios are exactly 2 and 0.5
    assert float(metrics["clip_frac_low"]) == 0.0 and float(metrics["clip_frac_high"]) == 0.0


@pytest.mark.parametrize("t", [5, 2])
def test_gmpo_uses_the_rows_mean_per_token_advantage(t):
    """gmpo takes one advantage per sequence (its sign picks the clip side): per-token
    advantages that vary inside a row (zero-mean offsets on its tokens, one flipping a
    token's sign where the log-ratio 0.5 is beyond eps_high) give the loss of the means."""
    rng = np.random.default_rng(8)
    logps = rng.normal(-1.0, 0.3, (3, t)).astype(np.float32)
    old = (logps + rng.normal(0.0, 0.3, (3, t))).astype(np.float32)
    lengths = np.array([t, 2, 1])
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
    adv = np.array([0.9, -1.2, 0.6], np.float32)
    offsets = np.zeros((3, t), np.float32)
    old[0, 1] = logps[0, 1] - 0.5
    offsets[0, :2], offsets[1, :2] = [1.5, -1.5], [-0.4, 0.4]  # 2.4 and -0.6 in row 0
    per_token = adv[:, None] + offsets
    args = (jnp.asarray(logps), jnp.asarray(old), None)
    row, _ = grpo_loss(*args, jnp.asarray(adv), jnp.asarray(mask), policy_loss="gmpo")
    tok, _ = grpo_loss(*args, jnp.asarray(per_token), jnp.asarray(mask), policy_loss="gmpo")
    np.testing.assert_allclose(float(tok), float(row), rtol=1e-6)
