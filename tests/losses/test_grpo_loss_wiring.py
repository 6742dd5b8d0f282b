"""`grpo_loss` wiring, values by hand: which options reach which term (an explicit batch
selection wins over the computed one, the clip_cov selection sees the loss's eps), token
weights in the metrics, sequence-level clip fractions, the dual-clip fraction near its cap."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from r1v2_jax.losses import grpo_loss

LOG = lambda *rows: jnp.log(jnp.asarray(rows, jnp.float32))  # noqa: E731


def test_entropy_coef_one_subtracts_the_entropies():
    # on-policy, A = +1: l = -1 per token; minus 1.0 * H = 0.5, 1.5 -> mean -2.0
    loss, metrics = grpo_loss(jnp.zeros((1, 2)), None, None, jnp.asarray([1.0]), jnp.ones((1, 2)),
                              entropies=jnp.asarray([[0.5, 1.5]]), entropy_coef=1.0)
    assert float(loss) == pytest.approx(-2.0, abs=1e-6)
    assert float(metrics["entropy"]) == pytest.approx(1.0, abs=1e-6)


def test_a_token_weight_counts_in_the_loss_and_every_metric_mean():
    # one row, ratios 1.5 and 0.5, weights 1 and 0.5, A = -1, entropies 2 and 4:
    # l = max(rho, clip(rho, 0.8, 1.2)) = 1.5 and 0.8 -> (1.5 + 0.5 * 0.8) / 1.5
    loss, m = grpo_loss(LOG([1.5, 0.5]), jnp.zeros((1, 2)), None, jnp.asarray([-1.0]),
                        jnp.asarray([[1.0, 0.5]]), entropies=jnp.asarray([[2.0, 4.0]]))
    assert float(loss) == pytest.approx((1.5 + 0.5 * 0.8) / 1.5, abs=1e-6)
    assert float(m["ratio_mean"]) == pytest.approx((1.5 + 0.5 * 0.5) / 1.5, abs=1e-6)
    assert float(m["entropy"]) == pytest.approx((2.0 + 0.5 * 4.0) / 1.5, abs=1e-6)
    assert float(m["entropy_proxy"]) == pytest.approx(-(np.log(1.5) + 0.5 * np.log(0.5)) / 1.5,
                                                     abs=1e-6)
    assert float(m["clip_frac_low"]) == pytest.approx(0.5 / 1.5, abs=1e-6)  # 0.5 < 0.8, A < 0


def test_sequence_level_clip_fractions_are_shares_of_sequences():
    # GSPO: one ratio per sequence, mean_t log(1.5) = log 1.5 > log 1.2 with A > 0 in row 0
    logps = LOG([1.5, 1.5, 1.5], [1.0, 1.0, 1.0])
    _, m = grpo_loss(logps, jnp.zeros((2, 3)), None, jnp.asarray([1.0, 1.0]), jnp.ones((2, 3)),
                     importance_sampling_level="sequence")
    assert float(m["clip_frac_high"]) == pytest.approx(0.5) and float(m["clip_frac"]) == pytest.approx(0.5)


def test_padding_is_never_counted_as_clipped():
    # cispo_max 0.5 < 1: padding (rho = 1 there) would pass rho > cispo_max with A > 0
    _, m = grpo_loss(LOG([0.25, 1.0]), jnp.zeros((1, 2)), None, jnp.asarray([1.0]),
                     jnp.asarray([[1.0, 0.0]]), policy_loss="cispo", cispo_max=0.5)
    assert float(m["clip_frac_high"]) == 0.0


def test_a_masked_row_of_one_token_batches_is_never_clipped():
    # T = 1: the indicators are [B, 1] and summed over rows, as TRL's sequence-level ones
    # (no mask there); the masked row's log-ratio (garbage 3.0 here) must read as 0, rho 1
    _, m = grpo_loss(jnp.asarray([[0.1], [3.0]]), jnp.zeros((2, 1)), None, jnp.asarray([1.0, 1.0]),
                     jnp.asarray([[1.0], [0.0]]))
    assert float(m["clip_frac_high"]) == 0.0 and float(m["clip_frac"]) == 0.0


def test_dual_clip_fraction_with_a_cap_just_above_one():
    # c = 1.1, A = -1: max(rho, clip(rho, 0.8, 1.2)) = 0.8 and 1.05, neither above c
    loss, m = grpo_loss(LOG([0.5, 1.05]), jnp.zeros((1, 2)), None, jnp.asarray([-1.0]),
                        jnp.ones((1, 2)), dual_clip=1.1)
    assert float(m["dual_clip_frac"]) == 0.0
    assert float(loss) == pytest.approx((0.8 + 1.05) / 2, abs=1e-6)


def test_a_ratio_exactly_on_the_dual_clip_cap_is_not_counted():
    args = (LOG([2.5]), jnp.zeros((1, 1)), None, jnp.asarray([-1.0]), jnp.ones((1, 1)))
    rho = float(grpo_loss(*args)[1]["ratio_mean"])  # the fp32 ratio itself (one token)
    assert rho == pytest.approx(2.5, abs=1e-6)
    loss, m = grpo_loss(*args, dual_clip=rho)  # strict, as verl's torch.gt
    assert float(m["dual_clip_frac"]) == 0.0 and float(loss) == pytest.approx(rho)


def test_an_explicit_entropy_mask_wins_over_top_entropy_quantile():
    # the quantile would keep H >= median(1, 2, 3, 4) = 2.5: tokens 3 and 4 (row 1);
    # the mask passed keeps token 1 only. On-policy: l = -A, A = (2, -1)
    loss, m = grpo_loss(jnp.zeros((2, 2)), None, None, jnp.asarray([2.0, -1.0]), jnp.ones((2, 2)),
                        entropies=jnp.asarray([[1.0, 2.0], [3.0, 4.0]]), top_entropy_quantile=0.5,
                        entropy_mask=jnp.asarray([[1.0, 0.0], [0.0, 0.0]]))
    assert float(m["entropy_mask_frac"]) == 0.25
    assert float(loss) == pytest.approx((-2.0 / 2 + 0.0) / 2, abs=1e-6)


# rows A = +1 (ratios 1.5, 1) and A = -1 (0.7, 1); lb/ub wide and ratio 1: every valid
# token the clip does not already clip is selected
_COV = dict(clip_cov_ratio=1.0, clip_cov_lb=-100.0, clip_cov_ub=100.0)
_COV_ARGS = (LOG([1.5, 1.0], [0.7, 1.0]), jnp.zeros((2, 2)), None, jnp.asarray([1.0, -1.0]),
             jnp.ones((2, 2)))


@pytest.mark.parametrize("eps, selected", [
    ({}, 2),  # defaults 0.2 / 0.2: 1.5 > 1.2 (A > 0) and 0.7 < 0.8 (A < 0) are clipped
    (dict(eps_low=0.4, eps_high=0.6), 4),  # [0.6, 1.6]: nothing clipped
])
def test_clip_cov_selection_sees_the_losss_eps(eps, selected):
    loss, m = grpo_loss(*_COV_ARGS, policy_loss="clip_cov", **_COV, **eps)
    assert float(m["cov_selected_frac"]) == selected / 4
    if not eps:  # selected tokens drop out: -1.2 and 0.8 remain, grpo mean over 2 tokens
        assert float(loss) == pytest.approx((-1.2 / 2 + 0.8 / 2) / 2, abs=1e-6)


@pytest.mark.parametrize("policy_loss", ["clip_cov", "kl_cov"])
def test_an_explicit_cov_selection_wins(policy_loss):
    # computed here, the selection would hold 2 tokens (clip_cov) or 1 (kl_cov)
    _, m = grpo_loss(*_COV_ARGS, policy_loss=policy_loss, cov_selection=jnp.zeros((2, 2)),
                     **_COV, kl_cov_ratio=0.1)
    assert float(m["cov_selected_frac"]) == 0.0


def test_plain_grpo_computes_no_selection():
    _, m = grpo_loss(*_COV_ARGS)
    assert set(m) == {"clip_frac_low", "clip_frac_high", "clip_frac", "ratio_mean",
                      "entropy_proxy", "num_tokens", "num_sequences"}
