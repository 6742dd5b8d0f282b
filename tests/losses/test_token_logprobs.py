"""Token log-probs: chunked == naive (values and gradients), torch parity, memory bound."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from r1v2_jax.losses import entropy_from_logits, logprobs_from_logits, token_logprobs

jit_logprobs = jax.jit(logprobs_from_logits)
jit_entropy = jax.jit(entropy_from_logits)


def inputs(b=2, t=13, e=8, v=37, seed=0):
    rng = np.random.default_rng(seed)
    hidden = jnp.asarray(rng.normal(size=(b, t, e)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(e, v)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, v, (b, t)), jnp.int32)
    return hidden, kernel, targets


def test_logprobs_and_entropy_from_logits_match_torch():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 4, 9)) * 3
    targets = rng.integers(0, 9, (3, 4))
    temperature = 0.7
    ref_logp = torch.log_softmax(torch.tensor(logits) / temperature, dim=-1)
    expected = torch.gather(ref_logp, -1, torch.tensor(targets)[..., None])[..., 0].numpy()
    expected_entropy = -(ref_logp.exp() * ref_logp).sum(-1).numpy()
    lp = jax.jit(logprobs_from_logits, static_argnums=2)
    np.testing.assert_allclose(lp(jnp.asarray(logits), targets, temperature), expected, rtol=1e-5, atol=1e-6)
    entropy = jax.jit(entropy_from_logits, static_argnums=1)(jnp.asarray(logits), temperature)
    np.testing.assert_allclose(entropy, expected_entropy, rtol=1e-5, atol=1e-6)
    assert lp(jnp.asarray(logits, jnp.bfloat16), targets, temperature).dtype == jnp.float32


def test_hand_computed_uniform_logits():
    logits = jnp.zeros((1, 2, 4))
    np.testing.assert_allclose(jit_logprobs(logits, jnp.array([[0, 3]])), np.log(0.25), rtol=1e-6)
    np.testing.assert_allclose(jit_entropy(logits), np.log(4.0), rtol=1e-6)
    # temperature 2 on logits [log 4, 0]: softmax([log 2, 0]) = [2/3, 1/3]
    two = jnp.array([[np.log(4.0), 0.0]])
    got = jax.jit(logprobs_from_logits, static_argnums=2)(two, jnp.array([0]), 2.0)
    np.testing.assert_allclose(got, np.log(2 / 3), rtol=1e-6)


@pytest.mark.parametrize("chunk_size,return_entropy", [(1, False), (5, True), (13, False), (64, True)])
def test_chunked_equals_naive_values_and_gradients(chunk_size, return_entropy):
    hidden, kernel, targets = inputs()
    weights = jnp.linspace(-1.0, 1.0, hidden.shape[1])  # a non-trivial cotangent

    def naive(h, w):
        logits = h @ w
        lp = logprobs_from_logits(logits, targets, 0.8)
        ent = entropy_from_logits(logits, 0.8)
        return jnp.sum(lp * weights) + (jnp.sum(ent * weights) if return_entropy else 0.0), (lp, ent)

    def chunked(h, w):
        out = token_logprobs(h, w, targets, temperature=0.8, chunk_size=chunk_size,
                             return_entropy=return_entropy)
        lp, ent = out if return_entropy else (out, None)
        return jnp.sum(lp * weights) + (jnp.sum(ent * weights) if return_entropy else 0.0), (lp, ent)

    grad = lambda f: jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))  # noqa: E731
    (_, (lp_n, ent_n)), (gh_n, gw_n) = grad(naive)(hidden, kernel)
    (_, (lp_c, ent_c)), (gh_c, gw_c) = grad(chunked)(hidden, kernel)
    np.testing.assert_allclose(lp_c, lp_n, rtol=1e-5, atol=1e-6)
    if return_entropy:
        np.testing.assert_allclose(ent_c, ent_n, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gh_c, gh_n, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gw_c, gw_n, rtol=1e-4, atol=1e-6)


def test_bf16_inputs_give_fp32_logprobs_close_to_fp32_path():
    hidden, kernel, targets = inputs()
    hidden, kernel = hidden.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
    got = jax.jit(token_logprobs, static_argnames="chunk_size")(hidden, kernel, targets, chunk_size=5)
    exact = jax.jit(lambda h, w: logprobs_from_logits(h.astype(jnp.float32) @ w.astype(jnp.float32),
                                                      targets))(hidden, kernel)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, exact, rtol=1e-4, atol=1e-4)


def test_backward_never_holds_full_fp32_logits():
    b, t, e, v, chunk = 2, 256, 16, 4096, 16
    hidden = jax.ShapeDtypeStruct((b, t, e), jnp.float32)
    kernel = jax.ShapeDtypeStruct((e, v), jnp.float32)
    targets = jax.ShapeDtypeStruct((b, t), jnp.int32)
    full_logits_bytes = b * t * v * 4

    def loss(h, w, y, chunk_size):
        return jnp.sum(token_logprobs(h, w, y, chunk_size=chunk_size))

    def temp_bytes(chunk_size):
        fn = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=3)
        return fn.lower(hidden, kernel, targets, chunk_size).compile().memory_analysis().temp_size_in_bytes

    chunked, unchunked = temp_bytes(chunk), temp_bytes(t)
    assert unchunked >= full_logits_bytes  # the measurement sees the [B, T, V] block ...
    assert chunked < full_logits_bytes / 4  # ... and chunking removes it


def test_bad_arguments_raise():
    hidden, kernel, targets = inputs()
    with pytest.raises(ValueError, match="lm_head_kernel"):
        token_logprobs(hidden, kernel.T, targets)
    with pytest.raises(ValueError, match="targets"):
        token_logprobs(hidden, kernel, targets[:, :-1])
    with pytest.raises(ValueError, match="chunk_size"):
        token_logprobs(hidden, kernel, targets, chunk_size=0)
    with pytest.raises(ValueError, match="temperature"):
        logprobs_from_logits(jnp.zeros((2, 13, 37)), targets, 0.0)
