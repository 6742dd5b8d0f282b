"""Rollout correction (TIS / MIS / rejection) vs verl rollout_corr_helper and TRL's
vllm_importance_sampling modes, re-expressed in torch float64; TIS identity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from _policy_references import verl_rollout_correction
from test_grpo_loss_parity import make_inputs
from r1v2_jax.losses import ROLLOUT_CORRECTIONS, grpo_loss, rollout_correction

CASES = {  # name: options (thresholds differ from the defaults)
    "tis_token": dict(is_level="token", is_threshold=1.3),
    "tis_sequence": dict(is_level="sequence", is_threshold=1.2),
    "tis_geometric": dict(is_level="geometric", is_threshold=1.1),
    "mis_token": dict(is_level="token", is_threshold=1.3, is_mode="mask"),
    "mis_sequence": dict(is_level="sequence", is_threshold=1.5, is_mode="mask"),
    "rs_token": dict(rs_level="token", rs_threshold=1.4, rs_threshold_lower=0.8),
    "rs_sequence": dict(rs_level="sequence", rs_threshold=1.8),
    "rs_geometric_and_tis": dict(rs_level="geometric", rs_threshold=1.08, is_level="token", is_threshold=1.2),
}


def behaviour_and_old(seed):
    logps, old, _, _, mask = make_inputs(seed)
    # per-row drifts so that sequence / geometric ratios leave the thresholds too
    drift = np.array([0.15, -0.12, 0.02, 0.3, -0.05, 0.08])[:, None]
    rollout = old - drift + np.random.default_rng(seed).normal(0.0, 0.15, old.shape)
    return old, rollout, mask


@pytest.mark.parametrize("name", list(CASES))
def test_matches_verl_rollout_corr_helper(name):
    old, rollout, mask = behaviour_and_old(seed=len(name))
    mask[3, 0] = 1.0  # row 3 is empty: verl's geometric mean would divide 0 by 0
    kw = CASES[name]
    w_ref, m_ref, met_ref = verl_rollout_correction(torch.tensor(old), torch.tensor(rollout),
                                                    torch.tensor(mask, dtype=torch.float64), **kw)
    w, m, met = jax.jit(lambda a, b, c: rollout_correction(a, b, c, **kw))(
        jnp.asarray(old, jnp.float32), jnp.asarray(rollout, jnp.float32), jnp.asarray(mask))
    np.testing.assert_allclose(w, w_ref.numpy(), rtol=2e-5, atol=1e-6)
    np.testing.assert_array_equal(m, m_ref.numpy())
    assert set(met) == set(met_ref)
    for key, value in met_ref.items():
        np.testing.assert_allclose(float(met[key]), float(value), rtol=2e-5, atol=1e-6, err_msg=key)
    acted = [float(met[k]) for k in met if k.endswith("fraction_high") or k.endswith("masked_fraction")]
    assert max(acted) > 0  # the thresholds bind on these inputs


def test_tis_with_behaviour_equal_to_current_is_the_identity():
    logps, old, ref, adv, mask = make_inputs(seed=4)
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    for kw in CASES.values():
        w, m, met = rollout_correction(f32(old), f32(old), f32(mask), **kw)
        np.testing.assert_array_equal(w, mask)
        np.testing.assert_array_equal(m, mask)
        assert float(met["rollout_kl_k1"]) == 0.0 and float(met["rollout_kl_k3"]) == 0.0
    w, m, _ = rollout_correction(f32(old), f32(old), f32(mask), is_level="sequence", rs_level="token")
    loss = lambda x, iw: grpo_loss(x, f32(old), f32(ref), f32(adv), m, loss_type="bnpo", beta=0.05,  # noqa
                                   importance_weights=iw)[0]
    plain = jax.value_and_grad(loss)(f32(logps), None)
    weighted = jax.value_and_grad(loss)(f32(logps), w)
    assert float(plain[0]) == float(weighted[0])
    np.testing.assert_array_equal(plain[1], weighted[1])


def test_bad_options_raise():
    x = jnp.zeros((2, 3))
    for kw, word in ((dict(is_level="tokens"), "is_level"), (dict(is_mode="clip"), "is_mode"),
                     (dict(rs_level="token", rs_threshold=0.0), "threshold"),
                     (dict(rs_level="token", rs_threshold=2.0, rs_threshold_lower=3.0), "lower")):
        with pytest.raises(ValueError, match=word):
            rollout_correction(x, x, jnp.ones((2, 3)), **kw)
    assert ROLLOUT_CORRECTIONS.names() == ("geometric", "sequence", "token")
