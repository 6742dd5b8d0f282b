"""GRPO loss vs TRL 1.x GRPOTrainer._compute_loss (re-expressed in torch), option by option."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from _loss_references import trl_grpo_loss
from r1v2_jax.losses import grpo_loss

B, T = 6, 7
CLIPS = {  # name: (eps_low, eps_high, dual_clip)
    "symmetric": (0.2, 0.2, None),
    "clip_higher": (0.2, 0.28, None),
    "dual_clip": (0.2, 0.28, 1.6),
}
KLS = {  # name: (beta, estimator, bias_correction)
    "no_kl": (0.0, "k3", False),
    "k1": (0.05, "k1", False),
    "k2": (0.05, "k2", False),
    "k3": (0.05, "k3", False),
    "k3_bias_corrected": (0.05, "k3", True),
}


def make_inputs(seed: int):
    rng = np.random.default_rng(seed)
    logps = -np.abs(rng.normal(1.0, 0.8, (B, T)))
    # log-ratios from -0.6 to 0.6 in every row, so ratios straddle both clip bounds
    log_ratio = np.stack([np.roll(np.linspace(-0.6, 0.6, T), r) for r in range(B)])
    old = logps - log_ratio - rng.uniform(-0.03, 0.03, (B, T))
    ref = logps + rng.normal(0.0, 0.5, (B, T))
    advantages = np.array([1.3, 0.0, 0.7, -0.4, -1.1, 0.8]) * rng.uniform(0.5, 1.5, B)
    lengths = np.array([T, 3, 1, 0, 5, T - 1])  # includes an empty completion
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.float32)
    logps[mask == 0] = rng.normal(0.0, 3.0, int((mask == 0).sum()))  # padding garbage
    return logps, old, ref, advantages, mask


def reference(logps, old, ref, advantages, mask, **kw):
    lp = torch.tensor(logps, dtype=torch.float64, requires_grad=True)
    t = lambda x: None if x is None else torch.tensor(x, dtype=torch.float64)  # noqa: E731
    loss, metrics = trl_grpo_loss(lp, t(old), t(ref), t(advantages), t(mask), **kw)
    loss.backward()
    return loss.item(), lp.grad.numpy(), {k: v.item() for k, v in metrics.items()}


def ours(logps, old, ref, advantages, mask, **kw):
    f32 = lambda x: None if x is None else jnp.asarray(x, jnp.float32)  # noqa: E731

    def loss_fn(lp):
        return grpo_loss(lp, f32(old), f32(ref), f32(advantages), f32(mask), **kw)

    (loss, metrics), grad = jax.value_and_grad(loss_fn, has_aux=True)(f32(logps))
    return float(loss), np.asarray(grad), {k: float(v) for k, v in metrics.items()}


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("clip", list(CLIPS))
@pytest.mark.parametrize("kl", list(KLS))
def test_matches_trl(loss_type, clip, kl):
    eps_low, eps_high, dual_clip = CLIPS[clip]
    beta, estimator, bias_correction = KLS[kl]
    logps, old, ref, adv, mask = make_inputs(seed=zlib.crc32(f"{loss_type}{clip}{kl}".encode()))
    ref_arg = None if beta == 0.0 else ref
    common = dict(loss_type=loss_type, eps_low=eps_low, eps_high=eps_high, beta=beta,
                  max_completion_length=T + 3)
    expected = reference(logps, old, ref_arg, adv, mask, epsilon_low=eps_low, epsilon_high=eps_high,
                         dual_clip=dual_clip, kl_estimator=estimator,
                         use_bias_correction_kl=bias_correction,
                         **{k: v for k, v in common.items() if k not in ("eps_low", "eps_high")})
    got = ours(logps, old, ref_arg, adv, mask, dual_clip=dual_clip, kl_estimator=estimator,
               kl_bias_correction=bias_correction, **common)

    np.testing.assert_allclose(got[0], expected[0], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], expected[1], rtol=2e-4, atol=1e-7)
    for key, value in expected[2].items():
        np.testing.assert_allclose(got[2][key], value, rtol=2e-5, atol=1e-6, err_msg=key)
    assert got[2]["num_tokens"] == mask.sum()
    assert ("kl" in got[2]) == (beta != 0.0)
    assert (got[2]["clip_frac_low"] > 0) and (got[2]["clip_frac_high"] > 0)  # the inputs exercise both


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_dual_clip_equals_trl_delta_when_above_one_plus_eps_high(loss_type):
    """TRL's two-sided `delta` clamp and the dual clip coincide for c > 1 + eps_high."""
    logps, old, _, adv, mask = make_inputs(seed=7)
    old = logps - np.abs(old - logps) * 3  # large ratios so the cap binds
    expected = reference(logps, old, None, adv, mask, loss_type=loss_type, epsilon_low=0.2,
                         epsilon_high=0.28, beta=0.0, trl_delta=1.6)
    got = ours(logps, old, None, adv, mask, loss_type=loss_type, eps_low=0.2, eps_high=0.28, dual_clip=1.6)
    np.testing.assert_allclose(got[0], expected[0], rtol=2e-5)
    np.testing.assert_allclose(got[1], expected[1], rtol=2e-4, atol=1e-7)
    assert got[2]["dual_clip_frac"] > 0


@pytest.mark.parametrize("shape", ["per_sequence", "per_token"])
def test_importance_weights_scale_policy_term_only(shape):
    logps, old, ref, adv, mask = make_inputs(seed=11)
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.2, 1.0, B if shape == "per_sequence" else (B, T))
    w_torch = torch.tensor(weights)[:, None] if shape == "per_sequence" else torch.tensor(weights)
    kw = dict(loss_type="bnpo", beta=0.05)
    expected = reference(logps, old, ref, adv, mask, epsilon_low=0.2, epsilon_high=0.2,
                         importance_sampling_ratio=w_torch, **kw)
    got = ours(logps, old, ref, adv, mask, importance_weights=jnp.asarray(weights, jnp.float32), **kw)
    np.testing.assert_allclose(got[0], expected[0], rtol=2e-5)
    np.testing.assert_allclose(got[1], expected[1], rtol=2e-4, atol=1e-7)


def test_on_policy_old_none_matches_trl_detached_old():
    logps, _, ref, adv, mask = make_inputs(seed=3)
    expected = reference(logps, None, ref, adv, mask, loss_type="grpo", epsilon_low=0.2,
                         epsilon_high=0.2, beta=0.05)
    got = ours(logps, None, ref, adv, mask, loss_type="grpo", beta=0.05)
    np.testing.assert_allclose(got[0], expected[0], rtol=2e-5)
    np.testing.assert_allclose(got[1], expected[1], rtol=2e-4, atol=1e-7)
    assert got[2]["ratio_mean"] == pytest.approx(1.0)
    assert got[2]["clip_frac"] == 0.0


def test_dapo_num_items_in_batch_matches_trl():
    logps, old, _, adv, mask = make_inputs(seed=5)
    expected = reference(logps, old, None, adv, mask, loss_type="dapo", epsilon_low=0.2,
                         epsilon_high=0.28, beta=0.0, num_items_in_batch=torch.tensor(57.0))
    got = ours(logps, old, None, adv, mask, loss_type="dapo", eps_high=0.28, num_items_in_batch=57.0)
    np.testing.assert_allclose(got[0], expected[0], rtol=2e-5)
    np.testing.assert_allclose(got[1], expected[1], rtol=2e-4, atol=1e-7)
