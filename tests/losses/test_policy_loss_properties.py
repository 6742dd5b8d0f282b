"""Properties of the policy-loss family: GSPO == GRPO at length 1 on-policy, CISPO keeps
the gradient of clipped tokens, exact accumulation (4 micro-batches == 1 batch) for every
option, registry errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1v2_jax.losses import (
    LOSS_TYPES,
    POLICY_LOSSES,
    accumulated_loss,
    clip_cov_selection,
    grpo_loss,
    grpo_loss_terms,
    grpo_metrics,
    high_entropy_mask,
    kl_cov_selection,
)

B, T, E, V = 8, 6, 5, 11


def tiny_policy(seed=0):
    """A linear 'model': fixed hidden states, trainable LM head W -> (logps, entropies)."""
    rng = np.random.default_rng(seed)
    hidden = jnp.asarray(rng.normal(size=(B, T, E)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32)
    w = jnp.asarray(rng.normal(size=(E, V)) * 0.5, jnp.float32)

    def logps_of(params, start=0, size=B):
        logp = jax.nn.log_softmax(jax.lax.dynamic_slice_in_dim(hidden, start, size) @ params)
        tgt = jax.lax.dynamic_slice_in_dim(targets, start, size)
        return (jnp.take_along_axis(logp, tgt[..., None], -1)[..., 0],
                -jnp.sum(jnp.exp(logp) * logp, -1))

    old = logps_of(w + 0.3 * rng.normal(size=(E, V)).astype(np.float32))[0]
    ref = logps_of(w + 0.3 * rng.normal(size=(E, V)).astype(np.float32))[0]
    lengths = np.array([6, 2, 5, 1, 6, 3, 4, 6])
    mask = jnp.asarray(np.arange(T)[None] < lengths[:, None], jnp.float32)
    adv = jnp.asarray(rng.normal(size=B), jnp.float32)
    return w, logps_of, old, ref, adv, mask


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_gspo_equals_grpo_when_every_sequence_has_length_one(loss_type):
    rng = np.random.default_rng(0)
    logps = jnp.asarray(-rng.uniform(0.1, 2.0, (6, 4)), jnp.float32)
    mask = jnp.zeros((6, 4)).at[:, 0].set(1.0)  # one completion token per row
    adv = jnp.asarray(rng.normal(size=6), jnp.float32)
    ref = logps + 0.3
    kw = dict(loss_type=loss_type, max_completion_length=4, beta=0.04, eps_high=0.28)
    runs = {}
    for level in ("token", "sequence", "sequence_token"):
        fn = lambda x: grpo_loss(x, None, ref, adv, mask, importance_sampling_level=level, **kw)  # noqa
        runs[level] = jax.jit(jax.value_and_grad(fn, has_aux=True))(logps)
    for level in ("sequence", "sequence_token"):
        np.testing.assert_allclose(runs[level][0][0], runs["token"][0][0], rtol=1e-6)
        np.testing.assert_allclose(runs[level][1], runs["token"][1], rtol=1e-6, atol=1e-8)
    assert np.abs(np.asarray(runs["token"][1])).max() > 0


def test_cispo_gradient_never_vanishes_for_clipped_tokens():
    # ratios 3.0 (A > 0) and 0.2 (A < 0): clipped by GRPO (zero gradient), not by CISPO
    logps = jnp.log(jnp.array([[3.0, 1.0], [0.2, 1.0]]))
    old = jnp.zeros((2, 2))
    adv = jnp.array([1.0, -1.0])
    mask = jnp.ones((2, 2))

    def g(**kw):
        return np.asarray(jax.grad(lambda x: grpo_loss(x, old, None, adv, mask, loss_type="bnpo",
                                                       **kw)[0])(logps))

    grpo, cispo = g(), g(policy_loss="cispo", cispo_max=2.0)
    assert grpo[0, 0] == 0.0 and grpo[1, 0] == 0.0
    # d/dlogp of -sg(min(rho, cap)) A logp / 4 tokens: capped at 2.0 for rho = 3
    np.testing.assert_allclose(cispo[:, 0], [-2.0 * 1.0 / 4, 0.2 * 1.0 / 4], rtol=1e-6)
    assert np.all(cispo != 0.0)


OPTION_SETS = {
    "gspo": dict(importance_sampling_level="sequence"),
    "gspo_token": dict(importance_sampling_level="sequence_token"),
    "cispo": dict(policy_loss="cispo", cispo_max=1.5),
    "cispo_seq": dict(policy_loss="cispo", importance_sampling_level="sequence"),
    "gmpo": dict(policy_loss="gmpo", eps_low=0.4, eps_high=0.4),
    "sapo": dict(policy_loss="sapo", sapo_temperature_pos=0.8, sapo_temperature_neg=1.3),
    "sapo_seq_token": dict(policy_loss="sapo", importance_sampling_level="sequence_token"),
    "clip_cov": dict(policy_loss="clip_cov"),
    "kl_cov": dict(policy_loss="kl_cov", ppo_kl_coef=0.5),
    "entropy": dict(entropy_coef=0.01, top_entropy_quantile=0.5, dual_clip=2.5),
}


@pytest.mark.parametrize("name", list(OPTION_SETS))
def test_four_micro_batches_equal_one_batch(name):
    w, logps_of, old, ref, adv, mask = tiny_policy(seed=1)
    opts = dict(OPTION_SETS[name])
    q = opts.pop("top_entropy_quantile", 1.0)
    iw = jnp.linspace(0.5, 1.0, B)
    kw = dict(max_completion_length=T, beta=0.05, kl_bias_correction=True, **opts)
    # batch-level selections, once from the whole batch (what the trainer's pre-pass does)
    lp0, ent0 = logps_of(w)
    sel = {}
    if q < 1.0:
        sel["entropy_mask"] = high_entropy_mask(ent0, mask, q)
    if opts.get("policy_loss") == "clip_cov":
        sel["cov_selection"] = clip_cov_selection(lp0, old, adv, mask, clip_cov_ratio=0.1, clip_cov_lb=0.0)
    if opts.get("policy_loss") == "kl_cov":
        sel["cov_selection"] = kl_cov_selection(lp0, adv, mask, kl_cov_ratio=0.1)
    assert all(float(jnp.sum(s)) > 0 for s in sel.values())

    def full(params, loss_type):
        lp, ent = logps_of(params)
        return grpo_loss(lp, old, ref, adv, mask, importance_weights=iw, entropies=ent,
                         loss_type=loss_type, **sel, **kw)

    def micro(params, start, loss_type):
        take = lambda x: jax.lax.dynamic_slice_in_dim(x, start, 2)  # noqa: E731
        lp, ent = logps_of(params, start, 2)
        num, den, sums = grpo_loss_terms(lp, take(old), take(ref), take(adv), take(mask),
                                         importance_weights=take(iw), entropies=ent,
                                         loss_type=loss_type, **{k: take(v) for k, v in sel.items()},
                                         **kw)
        return num, (den, sums)

    @jax.jit
    def both(params):
        out = {}
        for loss_type in LOSS_TYPES:
            whole = jax.value_and_grad(full, has_aux=True)(params, loss_type)
            parts = [jax.value_and_grad(micro, has_aux=True)(params, 2 * i, loss_type) for i in range(4)]
            out[loss_type] = whole, parts
        return out

    for loss_type, ((full_loss, full_metrics), full_grad), parts in (
            (k, *v) for k, v in both(w).items()):
        num_t = sum(p[0][0] for p in parts)
        den_t = sum(p[0][1][0] for p in parts)
        grad_t = sum(p[1] for p in parts)
        sums_t = jax.tree.map(lambda *x: sum(x), *[p[0][1][1] for p in parts])
        np.testing.assert_allclose(accumulated_loss(num_t, den_t), full_loss, rtol=1e-5, atol=1e-7,
                                   err_msg=loss_type)
        np.testing.assert_allclose(grad_t / jnp.maximum(den_t, 1.0), full_grad, rtol=1e-4, atol=1e-7,
                                   err_msg=loss_type)
        assert np.abs(np.asarray(full_grad)).max() > 0
        for key, value in grpo_metrics(sums_t).items():
            np.testing.assert_allclose(value, full_metrics[key], rtol=1e-5, atol=1e-7,
                                       err_msg=f"{loss_type} {key}")


def test_unknown_names_and_bad_combinations_raise():
    x = jnp.zeros((2, 3))
    adv, mask = jnp.zeros((2,)), jnp.ones((2, 3))
    with pytest.raises(ValueError, match="registered: cispo, clip_cov, gmpo, grpo, kl_cov, sapo"):
        grpo_loss(x, x, None, adv, mask, policy_loss="ppo2")
    cases = [
        (dict(importance_sampling_level="segment"), "importance_sampling_level"),
        (dict(policy_loss="gmpo", importance_sampling_level="sequence"), "own ratio"),
        (dict(policy_loss="cispo", dual_clip=3.0), "dual_clip"),
        (dict(entropy_coef=0.1), "entropies"),
        (dict(top_entropy_quantile=0.2), "entropies"),
        (dict(policy_loss="sapo", sapo_temperature_neg=0.0), "sapo_temperature_neg"),
    ]
    for options, word in cases:
        with pytest.raises(ValueError, match=word):
            grpo_loss(x, x, None, adv, mask, **options)
    with pytest.raises(ValueError, match="cov_selection"):
        grpo_loss_terms(x, x, None, adv, mask, policy_loss="kl_cov")
    assert POLICY_LOSSES.names() == ("cispo", "clip_cov", "gmpo", "grpo", "kl_cov", "sapo")
