"""The sampling function on given logits: distributions, greedy, log-probs, keys."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from r1v2_jax.generate.sampling import (filtered_logits, inverse_cdf_sample, nucleus_threshold,
                                        row_keys, sample_tokens, step_keys)

TOY_LOGITS = np.array([2.0, 1.5, 1.2, 0.7, 0.3, 0.0, -0.5, -1.5], np.float32)


def reference_distribution(logits, temperature, top_k, top_p):
    """Hugging Face warper semantics, written independently in NumPy (float64):
    temperature, then top-k, then top-p by the ascending-cumsum rule
    (drop tokens whose ascending cumulative probability is <= 1 - top_p)."""
    x = logits.astype(np.float64) / temperature
    if top_k:
        kth = np.sort(x)[::-1][min(top_k, len(x)) - 1]
        x = np.where(x < kth, -np.inf, x)
    if top_p < 1.0:
        order = np.argsort(x)  # ascending
        p = np.exp(x[order] - x.max())
        p /= p.sum()
        drop = np.cumsum(p) <= 1 - top_p
        drop[-1] = False
        x[order[drop]] = -np.inf
    p = np.exp(x - x.max())
    return p / p.sum()


_sample = jax.jit(sample_tokens, static_argnames=("greedy", "top_k", "use_top_p", "suppress"))


def draw(logits, n, **kw):
    keys = jax.random.split(jax.random.key(1234), n)
    tokens, logprobs = _sample(keys, jnp.broadcast_to(logits, (n, len(logits))),
                               greedy=False, temperature=jnp.float32(kw["temperature"]),
                               top_k=kw["top_k"], use_top_p=kw["top_p"] < 1,
                               top_p=jnp.float32(kw["top_p"]))
    return np.asarray(tokens), np.asarray(logprobs)


CASES = [dict(temperature=0.5, top_k=0, top_p=1.0), dict(temperature=1.0, top_k=3, top_p=1.0),
         dict(temperature=1.0, top_k=0, top_p=0.8), dict(temperature=0.7, top_k=5, top_p=0.9)]


@pytest.mark.parametrize("kw", CASES)
def test_empirical_frequencies_match_intended_distribution(kw):
    n = 20000
    tokens, _ = draw(TOY_LOGITS, n, **kw)
    expected = reference_distribution(TOY_LOGITS, kw["temperature"], kw["top_k"], kw["top_p"])
    counts = np.bincount(tokens, minlength=len(TOY_LOGITS))
    kept = expected > 0
    assert (counts[~kept] == 0).all(), (counts, expected)  # truncated tokens never appear
    assert kept.sum() >= 2  # every case leaves something to test
    _, p_value = stats.chisquare(counts[kept], n * expected[kept])
    assert p_value > 1e-3, (counts, n * expected)


@pytest.mark.parametrize("kw", CASES)
def test_filtered_logits_give_the_reference_distribution(kw):
    x = filtered_logits(jnp.asarray(TOY_LOGITS), temperature=kw["temperature"],
                        top_k=kw["top_k"], top_p=kw["top_p"])
    got = np.asarray(jax.nn.softmax(x))
    expected = reference_distribution(TOY_LOGITS, kw["temperature"], kw["top_k"], kw["top_p"])
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_top_p_keeps_the_token_that_crosses_the_threshold():
    # probs 0.5, 0.3, 0.2: top_p=0.6 keeps the first two (0.5 < 0.6, then 0.8 >= 0.6).
    logits = np.log(np.array([0.5, 0.3, 0.2], np.float32))
    x = filtered_logits(jnp.asarray(logits), temperature=1.0, top_p=0.6)
    np.testing.assert_allclose(np.asarray(jax.nn.softmax(x)), [0.625, 0.375, 0.0], atol=1e-6)


def test_logprobs_are_full_vocabulary_under_temperature():
    kw = dict(temperature=0.7, top_k=3, top_p=0.9)
    tokens, logprobs = draw(TOY_LOGITS, 64, **kw)
    x = TOY_LOGITS.astype(np.float64) / 0.7
    full = x - np.log(np.exp(x).sum())
    np.testing.assert_allclose(logprobs, full[tokens], atol=1e-5)
    assert logprobs.dtype == np.float32


def test_greedy_is_argmax_with_temperature_one_logprobs():
    logits = np.random.default_rng(0).standard_normal((5, 11)).astype(np.float32)
    keys = jax.random.split(jax.random.key(0), 5)
    tokens, logprobs = _sample(keys, jnp.asarray(logits), greedy=True,
                               temperature=jnp.float32(1.0), top_k=0, use_top_p=False,
                               top_p=jnp.float32(1.0))
    np.testing.assert_array_equal(np.asarray(tokens), logits.argmax(-1))
    lse = np.log(np.exp(logits.astype(np.float64)).sum(-1))
    np.testing.assert_allclose(np.asarray(logprobs), logits.max(-1) - lse, atol=1e-5)


def test_row_keys_depend_only_on_the_row_identity():
    a = row_keys(7, jnp.array([3, 5, 3], jnp.uint32), jnp.array([0, 1, 1], jnp.uint32))
    b = row_keys(7, jnp.array([5, 3], jnp.uint32), jnp.array([1, 0], jnp.uint32))
    data = lambda k: np.asarray(jax.random.key_data(k))
    np.testing.assert_array_equal(data(a)[0], data(b)[1])  # (3, 0) wherever it sits
    np.testing.assert_array_equal(data(a)[1], data(b)[0])  # (5, 1)
    assert not np.array_equal(data(a)[0], data(a)[2])  # sample index matters
    other_seed = row_keys(8, jnp.array([3], jnp.uint32), jnp.array([0], jnp.uint32))
    assert not np.array_equal(data(a)[0], data(other_seed)[0])
    steps = [data(step_keys(a, s))[0] for s in range(3)]
    assert not np.array_equal(steps[0], steps[1]) and not np.array_equal(steps[1], steps[2])


def test_suppressed_tokens_are_never_picked_but_keep_full_logprobs():
    n = 2000
    keys = jax.random.split(jax.random.key(5), n)
    logits = jnp.broadcast_to(jnp.asarray(TOY_LOGITS), (n, len(TOY_LOGITS)))
    tokens, logprobs = _sample(keys, logits, greedy=False, temperature=jnp.float32(1.0),
                               top_k=2, use_top_p=False, top_p=jnp.float32(1.0),
                               suppress=(0, 3))
    tokens = np.asarray(tokens)
    assert set(np.unique(tokens)) == {1, 2}  # top-2 of what is left
    full = TOY_LOGITS - np.log(np.exp(TOY_LOGITS.astype(np.float64)).sum())
    np.testing.assert_allclose(np.asarray(logprobs), full[tokens], atol=1e-5)
    greedy, _ = _sample(keys[:1], logits[:1], greedy=True, temperature=jnp.float32(1.0),
                        top_k=0, use_top_p=False, top_p=jnp.float32(1.0), suppress=(0,))
    assert int(greedy[0]) == 1


def test_inverse_cdf_sampling_across_blocks():
    rng = np.random.default_rng(0)
    weights = rng.random(300).astype(np.float32)
    weights[rng.choice(300, 120, replace=False)] = 0.0  # zero weights, never drawn
    weights[[0, 299]] = 0.0
    n = 40000
    u = jax.random.uniform(jax.random.key(3), (n,))
    draw = jax.jit(inverse_cdf_sample, static_argnames="block")
    idx = np.asarray(draw(u, jnp.broadcast_to(jnp.asarray(weights), (n, 300)), block=16))
    counts = np.bincount(idx, minlength=300)
    kept = weights > 0
    assert (counts[~kept] == 0).all()
    _, p_value = stats.chisquare(counts[kept], n * weights[kept] / weights.sum())
    assert p_value > 1e-3
    edges = np.asarray(draw(jnp.array([0.0, 1.0 - 2**-24]),
                            jnp.broadcast_to(jnp.asarray(weights), (2, 300)), block=16))
    nonzero = np.flatnonzero(kept)
    assert edges.tolist() == [nonzero[0], nonzero[-1]]


def test_nucleus_threshold_matches_a_sorted_cumulative_sum():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((40, 200)) * rng.uniform(0.5, 4, (40, 1))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    for top_p in (0.3, 0.8, 0.95, 0.999):
        order = np.argsort(-probs, axis=-1)
        sorted_p = np.take_along_axis(probs, order, -1)
        keep_sorted = (np.cumsum(sorted_p, -1) - sorted_p) < top_p
        expected = np.zeros_like(keep_sorted)
        np.put_along_axis(expected, order, keep_sorted, -1)
        p32 = jnp.asarray(probs, jnp.float32)
        got = np.asarray(p32 >= nucleus_threshold(p32, jnp.float32(top_p)))
        np.testing.assert_array_equal(got, expected)


def test_temperature_is_applied_before_top_p():
    """T=0.5, top_p=0.7 on TOY_LOGITS: tempered probs .587 .216 ... keep 2 tokens (mass
    before the third is .803 >= .7); top-p on the untempered probs .363 .220 .163 ... would
    keep 3 (mass before the fourth is .746).  The existing CASES keep the same nucleus in
    either order, so they cannot tell the order apart."""
    kw = dict(temperature=0.5, top_k=0, top_p=0.7)
    x = TOY_LOGITS.astype(np.float64)
    p_tempered = np.exp(x / 0.5) / np.exp(x / 0.5).sum()
    np.testing.assert_allclose(p_tempered[:2], [0.5870, 0.2160], atol=1e-3)
    expected = np.zeros(len(x))
    expected[:2] = p_tempered[:2] / p_tempered[:2].sum()  # nucleus {0, 1}, renormalised
    got = np.asarray(jax.nn.softmax(filtered_logits(jnp.asarray(TOY_LOGITS), **kw)))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    n = 4000
    tokens, _ = draw(TOY_LOGITS, n, **kw)
    counts = np.bincount(tokens, minlength=len(x))
    assert counts[2:].sum() == 0, counts  # token 2 is in the untempered nucleus only
    _, p_value = stats.chisquare(counts[:2], n * expected[:2])
    assert p_value > 1e-3, (counts, n * expected)
