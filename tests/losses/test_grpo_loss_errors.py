"""`grpo_loss` / `grpo_loss_terms` option and shape checks: the exact message of each, and
the boundary values on both sides of every range check (eager, no jit: fast)."""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pytest

from r1v2_jax.losses import grpo_loss, grpo_loss_terms

X = jnp.zeros((2, 3))
ADV, MASK = jnp.asarray([0.5, -1.0]), jnp.ones((2, 3))
T = "grpo_loss_terms"

BAD = [
    (dict(loss_type="sum"), f"{T}: loss_type='sum' is not one of ['bnpo', 'dapo', 'dr_grpo', 'grpo']"),
    (dict(kl_estimator="k4"), f"{T}: kl_estimator='k4' is not one of ['k1', 'k2', 'k3']"),
    (dict(importance_sampling_level="segment"),
     f"{T}: importance_sampling_level='segment' is not one of ['sequence', 'sequence_token', 'token']"),
    (dict(eps_low=jnp.float32(0.2)), f"{T}: eps_low must be a Python float (a static option), got ArrayImpl"),
    (dict(eps_high=True), f"{T}: eps_high must be a Python float (a static option), got bool"),
    (dict(beta="0.1"), f"{T}: beta must be a Python float (a static option), got str"),
    (dict(eps_low=1.0), f"{T}: eps_low must be in [0, 1), got 1.0"),
    (dict(eps_low=-0.01), f"{T}: eps_low must be in [0, 1), got -0.01"),
    (dict(eps_high=-0.01), f"{T}: eps_high must be >= 0, got -0.01"),
    (dict(dual_clip=1.0), f"{T}: dual_clip must be > 1 (Ye et al. 2020), got 1.0"),
    (dict(dual_clip=np.float32(3.0)),
     f"{T}: dual_clip must be a Python float (a static option), got float32"),
    (dict(policy_loss="cispo", dual_clip=3.0),
     f"{T}: dual_clip applies to policy_loss='grpo' only, got 'cispo'"),
    (dict(policy_loss="gmpo", importance_sampling_level="sequence"),
     f"{T}: policy_loss='gmpo' defines its own ratio; it needs importance_sampling_level="
     f"'token', got 'sequence'"),
    (dict(policy_loss="clip_cov", importance_sampling_level="sequence_token"),
     f"{T}: policy_loss='clip_cov' defines its own ratio; it needs importance_sampling_level="
     f"'token', got 'sequence_token'"),
    (dict(beta=-0.5, ref=True), f"{T}: beta must be >= 0, got -0.5"),
    (dict(beta=0.04), f"{T}: beta=0.04 needs ref_logps (got None)"),
    (dict(kl_bias_correction=1), f"{T}: kl_bias_correction must be a bool, got 1"),
    (dict(sapo_temperature_pos=0.0), f"{T}: sapo_temperature_pos must be > 0, got 0.0"),
    (dict(sapo_temperature_neg=-1.0), f"{T}: sapo_temperature_neg must be > 0, got -1.0"),
    (dict(cispo_max=0), f"{T}: cispo_max must be > 0, got 0"),
    (dict(ppo_kl_coef=None), f"{T}: ppo_kl_coef must be a Python float (a static option), got NoneType"),
    (dict(entropy_coef=jnp.float32(0.0)),
     f"{T}: entropy_coef must be a Python float (a static option), got ArrayImpl"),
    (dict(loss_type="dr_grpo"), f"{T}: loss_type='dr_grpo' needs max_completion_length as a "
                                f"positive Python int, got None"),
    (dict(loss_type="dr_grpo", max_completion_length=True),
     f"{T}: loss_type='dr_grpo' needs max_completion_length as a positive Python int, got True"),
    (dict(loss_type="dr_grpo", max_completion_length=0),
     f"{T}: loss_type='dr_grpo' needs max_completion_length as a positive Python int, got 0"),
    (dict(loss_type="dr_grpo", max_completion_length=3.0),
     f"{T}: loss_type='dr_grpo' needs max_completion_length as a positive Python int, got 3.0"),
    (dict(policy_loss="ppo2"),
     f"{T}: policy_loss: unknown policy loss 'ppo2'; registered: cispo, clip_cov, gmpo, grpo, "
     f"kl_cov, sapo"),
    (dict(policy_loss="kl_cov", importance_sampling_level="sequence"),
     f"{T}: policy_loss='kl_cov' defines its own ratio; it needs importance_sampling_level="
     f"'token', got 'sequence'"),
    (dict(policy_loss="clip_cov", terms=True),
     f"{T}: policy_loss='clip_cov' needs cov_selection (token_selection.clip_cov_selection on "
     f"the whole batch)"),
    (dict(policy_loss="kl_cov", terms=True),
     f"{T}: policy_loss='kl_cov' needs cov_selection (token_selection.kl_cov_selection on the "
     f"whole batch)"),
    (dict(entropy_coef=0.1), f"{T}: entropy_coef=0.1 needs entropies (got None)"),
    (dict(top_entropy_quantile=0.5), "grpo_loss: top_entropy_quantile < 1 needs entropies (got None)"),
    (dict(num_items_in_batch=6.0, loss_type="bnpo"),
     "grpo_loss: num_items_in_batch is only used by loss_type='dapo', got 'bnpo'"),
]


@pytest.mark.parametrize("options, message", BAD, ids=[m[:60] for _, m in BAD])
def test_each_bad_option_has_its_exact_message(options, message):
    options = dict(options)
    ref = X if options.pop("ref", False) else None
    fn = grpo_loss_terms if options.pop("terms", False) else grpo_loss
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        fn(X, X, ref, ADV, MASK, **options)


@pytest.mark.parametrize("options", [
    dict(eps_low=0.0), dict(eps_low=0.99), dict(eps_high=0.0), dict(dual_clip=1.01),
    dict(beta=0.0), dict(beta=0.1, ref=True), dict(kl_bias_correction=True, ref=True),
    dict(loss_type="dr_grpo", max_completion_length=1), dict(eps_low=0, eps_high=1),
    dict(sapo_temperature_pos=1e-3, sapo_temperature_neg=1e-3, cispo_max=1e-3),
    dict(entropy_coef=0.0), dict(top_entropy_quantile=1.0),
    dict(loss_type="dapo", num_items_in_batch=6.0), dict(importance_sampling_level="sequence"),
])
def test_boundary_values_are_accepted(options):
    options = dict(options)
    ref = X - 0.5 if options.pop("ref", False) else None
    loss, metrics = grpo_loss(X - 0.1, X, ref, ADV, MASK, **options)
    assert np.isfinite(float(loss)) and float(metrics["num_tokens"]) == 6.0


@pytest.mark.parametrize("name, args, message", [
    ("logps", (jnp.zeros((2, 3, 1)), None, None, ADV, MASK),
     f"{T}: logps must have 2 dims, got shape (2, 3, 1)"),
    ("mask", (X, None, None, ADV, jnp.ones((2, 4))), f"{T}: mask must have shape (2, 3), got (2, 4)"),
    ("old", (X, jnp.zeros((3, 3)), None, ADV, MASK),
     f"{T}: old_logps must have shape (2, 3), got (3, 3)"),
    ("ref", (X, None, jnp.zeros((2,)), ADV, MASK), f"{T}: ref_logps must have shape (2, 3), got (2,)"),
    ("adv", (X, None, None, jnp.zeros((3,)), MASK),
     f"{T}: advantages must have shape (2, 3), got (3,)"),
])
def test_shape_errors_name_the_array(name, args, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        grpo_loss_terms(*args)


@pytest.mark.parametrize("name", ["entropies", "entropy_mask", "cov_selection"])
def test_optional_per_token_arrays_are_shape_checked(name):
    with pytest.raises(ValueError, match=f"^{re.escape(f'{T}: {name} must have shape (2, 3), got (2, 2)')}$"):
        grpo_loss_terms(X, None, None, ADV, MASK, **{name: jnp.zeros((2, 2))})


def test_importance_weights_shape_is_checked():
    with pytest.raises(ValueError, match=re.escape(f"{T}: importance_weights must have shape "
                                                   f"(2, 3), got (3,)")):
        grpo_loss_terms(X, None, None, ADV, MASK, importance_weights=jnp.ones((3,)))
