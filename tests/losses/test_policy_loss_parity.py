"""Policy-loss variants vs TRL 1.x `_compute_loss` and verl `core_algos.py`, re-expressed in
torch float64: loss, gradient and metrics, for every aggregation, KL on and off."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from _policy_references import aggregate, trl_high_entropy_mask, trl_policy_loss, verl_policy_matrix
from test_grpo_loss_parity import B, T, make_inputs
from r1v2_jax.losses import LOSS_TYPES, grpo_loss, high_entropy_mask

MCL = T + 3  # max_completion_length for dr_grpo
TRL_CASES = [(p, lvl) for p in ("grpo", "cispo", "sapo") for lvl in ("token", "sequence", "sequence_token")]
VERL_CASES = [("gmpo", "token"), ("clip_cov", "token"), ("kl_cov", "token")]
OPTS = dict(eps_low=0.2, eps_high=0.28, cispo_max=1.3, sapo_temperature_pos=0.9,
            sapo_temperature_neg=1.2, clip_cov_ratio=0.25, clip_cov_lb=0.2, clip_cov_ub=5.0,
            kl_cov_ratio=0.2, ppo_kl_coef=0.7)
BETA = 0.05


def t64(x):
    return None if x is None else torch.tensor(np.asarray(x, np.float64))


def reference(policy_loss, level, loss_type, logps, old, ref, adv, mask, priority):
    lp = torch.tensor(logps, dtype=torch.float64, requires_grad=True)
    m = t64(mask)
    beta = 0.0 if ref is None else BETA
    if (policy_loss, level) in TRL_CASES:
        per_token, metrics = trl_policy_loss(
            lp, t64(old), t64(ref), t64(adv), m, policy_loss=policy_loss, level=level,
            epsilon_low=OPTS["eps_low"], epsilon_high=OPTS["eps_high"], beta=beta,
            cispo_max=OPTS["cispo_max"], sapo_temperature_pos=OPTS["sapo_temperature_pos"],
            sapo_temperature_neg=OPTS["sapo_temperature_neg"])
    else:
        name = {"gmpo": "geo_mean"}.get(policy_loss, policy_loss)
        per_token, metrics = verl_policy_matrix(
            name, t64(old), lp, t64(adv), m, clip_ratio_low=OPTS["eps_low"],
            clip_ratio_high=OPTS["eps_high"], clip_cov_ratio=OPTS["clip_cov_ratio"],
            clip_cov_lb=OPTS["clip_cov_lb"], clip_cov_ub=OPTS["clip_cov_ub"], priority=t64(priority),
            kl_cov_ratio=OPTS["kl_cov_ratio"], ppo_kl_coef=OPTS["ppo_kl_coef"])
        if ref is not None:  # verl use_kl_loss with low_var_kl (k3), added per token
            d = t64(ref) - lp
            per_token = per_token + beta * (torch.exp(d) - d - 1)
            metrics["kl"] = ((torch.exp(d) - d - 1) * m).sum() / m.sum()
    loss = aggregate(per_token, m, loss_type, MCL)
    loss.backward()
    return loss.item(), lp.grad.numpy(), {k: float(v.detach()) for k, v in metrics.items()}


def ours(policy_loss, level, loss_type, logps, old, ref, adv, mask, priority):
    f32 = lambda x: None if x is None else jnp.asarray(x, jnp.float32)  # noqa: E731
    opts = dict(OPTS, policy_loss=policy_loss, importance_sampling_level=level, loss_type=loss_type,
                beta=0.0 if ref is None else BETA, max_completion_length=MCL)

    def loss_fn(lp):
        return grpo_loss(lp, f32(old), f32(ref), f32(adv), f32(mask), cov_priority=f32(priority), **opts)

    (loss, metrics), grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(f32(logps))
    return float(loss), np.asarray(grad), {k: float(v) for k, v in metrics.items()}


@pytest.mark.parametrize("kl", [False, True], ids=["no_kl", "k3"])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("case", TRL_CASES + VERL_CASES, ids=lambda c: "-".join(c))
def test_matches_reference(case, loss_type, kl):
    policy_loss, level = case
    logps, old, ref, adv, mask = make_inputs(seed=zlib.crc32(f"{case}{loss_type}{kl}".encode()))
    priority = np.random.default_rng(1).uniform(size=(B, T))
    ref = ref if kl else None
    expected = reference(policy_loss, level, loss_type, logps, old, ref, adv, mask, priority)
    got = ours(policy_loss, level, loss_type, logps, old, ref, adv, mask, priority)
    np.testing.assert_allclose(got[0], expected[0], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], expected[1], rtol=2e-4, atol=2e-7)
    assert expected[2] or (policy_loss == "sapo" and not kl)  # TRL logs no clip metric for sapo
    for key, value in expected[2].items():
        np.testing.assert_allclose(got[2][key], value, rtol=2e-5, atol=1e-6, err_msg=key)
    if policy_loss in ("clip_cov", "kl_cov"):
        assert got[2]["cov_selected_frac"] > 0  # the inputs select some tokens
    if policy_loss in ("grpo", "gmpo") and level == "token":
        assert got[2]["clip_frac_high"] > 0 and got[2]["clip_frac_low"] > 0


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_entropy_bonus_and_high_entropy_mask_match_verl_and_trl(loss_type):
    """TRL top_entropy_quantile (mask of the policy term) and verl entropy_coeff
    (pg_loss - c * agg_loss(entropy)); gradients w.r.t. log-probs and entropies."""
    logps, old, _, adv, mask = make_inputs(seed=21)
    ent = np.random.default_rng(2).uniform(0.1, 3.0, (B, T))
    q, coef = 0.4, 0.03
    lp = torch.tensor(logps, requires_grad=True)
    e = torch.tensor(ent, requires_grad=True)
    m = t64(mask)
    emask = trl_high_entropy_mask(e.detach(), m, 1 - q)
    per_token, _ = trl_policy_loss(lp, t64(old), None, t64(adv), m, policy_loss="grpo", level="token",
                                   epsilon_low=0.2, epsilon_high=0.28, beta=0.0, entropy_mask=emask)
    loss = aggregate(per_token, m, loss_type, MCL) - coef * aggregate(e, m, loss_type, MCL)
    loss.backward()

    def loss_fn(x, h):
        return grpo_loss(x, jnp.asarray(old, jnp.float32), None, jnp.asarray(adv, jnp.float32),
                         jnp.asarray(mask, jnp.float32), loss_type=loss_type, eps_high=0.28,
                         max_completion_length=MCL, entropies=h, entropy_coef=coef,
                         top_entropy_quantile=q)

    (got, metrics), (g_lp, g_e) = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))(
        jnp.asarray(logps, jnp.float32), jnp.asarray(ent, jnp.float32))
    np.testing.assert_allclose(float(got), loss.item(), rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(g_lp, lp.grad.numpy(), rtol=2e-4, atol=2e-7)
    np.testing.assert_allclose(g_e, e.grad.numpy(), rtol=2e-4, atol=2e-7)
    kept = float(emask.double().sum() / m.sum())
    assert 0.3 < kept < 0.6
    np.testing.assert_allclose(float(metrics["entropy_mask_frac"]), kept, rtol=1e-6)
    np.testing.assert_allclose(float(metrics["entropy"]), float((e * m).sum().detach() / m.sum()), rtol=1e-6)
    np.testing.assert_array_equal(
        np.asarray(high_entropy_mask(jnp.asarray(ent, jnp.float32), jnp.asarray(mask), q)),
        emask.numpy().astype(np.float32))
