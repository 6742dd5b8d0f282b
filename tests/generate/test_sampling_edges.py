"""Edges of the sampler that frequency tests cannot see: the exact bisection threshold,
mass ties, unnormalised weights, the inverse-CDF boundaries and clamps, top-k 1 / k = V,
filtered_logits' checks and shapes, full_logprobs' temperature.  Expected values are
written by hand or computed in NumPy (sorting), never by the functions under test."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1v2_jax.generate.sampling import (filtered_logits, full_logprobs, inverse_cdf_sample,
                                        nucleus_threshold, sample_tokens)

_threshold = jax.jit(nucleus_threshold)
_draw = jax.jit(inverse_cdf_sample, static_argnames="block")
_sample = jax.jit(sample_tokens, static_argnames=("greedy", "top_k", "use_top_p", "suppress"))


def _last_kept(p: np.ndarray, top_p: float) -> tuple[float, float]:
    """NumPy (float64): p(k*) of the nucleus (k* = first sorted index whose cumulative mass
    reaches top_p * total) and the distance of the goal from the nearest cumulative mass."""
    s = np.sort(p.astype(np.float64))[::-1]
    cum = np.cumsum(s)
    goal = top_p * cum[-1]
    k = int(np.argmax(cum >= goal))
    return s[k], float(np.min(np.abs(cum - goal)) / cum[-1])


def test_nucleus_threshold_is_exactly_the_last_kept_probability():
    """31 halvings on the bit patterns end on p(k*) itself, not a float next to it (a
    threshold 1 ulp low keeps a token 1 ulp below p(k*)); rows with near ties included."""
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((24, 150)) * rng.uniform(1.0, 4.0, (24, 1))
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    # near ties: the 2nd..4th largest of some rows sit 1-2 ulp below their predecessor
    for r in range(0, 24, 3):
        order = np.argsort(-probs[r])
        for j in (1, 2, 3):
            probs[r, order[j]] = np.nextafter(probs[r, order[j - 1]], np.float32(0))
    checked = 0
    for top_p in (0.001, 0.2, 0.5, 0.9, 0.99):  # 0.001: k* = 0, the largest probability
        expected, margin = zip(*(_last_kept(row, top_p) for row in probs))
        got = np.asarray(_threshold(jnp.asarray(probs), jnp.float32(top_p)))[:, 0]
        clear = np.asarray(margin) > 1e-5  # goal not within float32 rounding of a boundary
        np.testing.assert_array_equal(got[clear], np.float32(expected)[clear])
        checked += clear.sum()
    assert checked > 100


def test_nucleus_threshold_stops_where_the_mass_equals_top_p():
    """Dyadic probabilities (exact in float32): with mass exactly top_p after token k, token
    k is the last one kept (Hugging Face keeps i iff the mass strictly before i < top_p)."""
    probs = jnp.asarray([[0.5, 0.25, 0.125, 0.125], [0.125, 0.5, 0.125, 0.25]], jnp.float32)
    got = np.asarray(_threshold(probs, jnp.float32(0.75)))[:, 0]
    np.testing.assert_array_equal(got, [0.25, 0.25])
    got = np.asarray(_threshold(probs, jnp.float32(0.5)))[:, 0]
    np.testing.assert_array_equal(got, [0.5, 0.5])


def test_nucleus_threshold_takes_unnormalised_weights_of_any_scale():
    """The goal is top_p * sum(weights): weights 4 3 2 1 at top_p 0.5 -> goal 5, reached at
    3 (4 + 3 = 7 >= 5).  Scaling by a power of two is exact, so the threshold scales with
    it, up to 2^120 (the 31 halvings cover every bit pattern; the sum must not overflow)."""
    w = np.array([[4.0, 1.0, 3.0, 2.0]], np.float32)
    assert float(_threshold(jnp.asarray(w), jnp.float32(0.5))[0, 0]) == 3.0
    assert float(_threshold(jnp.asarray(w), jnp.float32(0.95))[0, 0]) == 1.0
    rng = np.random.default_rng(3)
    base = rng.random((6, 40)).astype(np.float32)
    for top_p in (0.3, 0.8):
        expected = np.float32([_last_kept(row, top_p)[0] for row in base])
        for scale in (2.0 ** -30, 2.0 ** 3, 2.0 ** 60, 2.0 ** 120):
            got = np.asarray(_threshold(jnp.asarray(base * np.float32(scale)),
                                        jnp.float32(top_p)))[:, 0]
            np.testing.assert_array_equal(got, expected * np.float32(scale), err_msg=str(scale))


@pytest.mark.parametrize("weights, block, u, expected", [
    # cumulative 1 2 3 4; u * 4 = 2 is not exceeded by token 1 (cum 2): token 2, across
    # the block boundary (blocks of 2), and token 1 when it falls inside a block
    ([1.0, 1.0, 1.0, 1.0], 2, 0.5, 2),
    ([1.0, 1.0, 1.0, 1.0], 4, 0.5, 2),
    ([1.0, 1.0, 1.0, 1.0], 2, 0.25, 1),
    # weights above 1 before smaller ones: cum 2, 2.5; u * 2.5 = 2.25 -> token 1
    ([2.0, 0.5, 0.0, 0.0], 4, 0.9, 1),
    ([2.0, 0.5], 1, 0.9, 1),
    # zero weights in between: cum 0 0 1 1 1 2 2; u * 2 = 1.5 -> token 5, searched as 7
    # blocks of 1 and as one block of 7
    ([0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0], 1, 0.75, 5),
    ([0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0], 7, 0.75, 5),
    ([0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0], 3, 0.75, 5),
    ([0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0], 7, 0.25, 2),
])
def test_inverse_cdf_hand_cases(weights, block, u, expected):
    w = jnp.asarray([weights], jnp.float32)
    got = int(_draw(jnp.asarray([u], jnp.float32), w, block=block)[0])
    assert got == expected


def test_inverse_cdf_stays_in_the_block_when_its_sum_and_cumsum_round_apart():
    """A block's total (reduction) and its running sum (cumsum) can differ in the last bit.
    A target between the two lies in the block by the block totals but past every entry by
    the running sum: the draw must still be the block's last non-zero entry, not a zero
    entry after it nor the next block's first entry."""
    rng = np.random.default_rng(11)
    block = 128
    w = (rng.random((400, 2 * block)) ** 8).astype(np.float32)
    w[:, [block - 2, block - 1, block]] = 0.0  # zeros at the end of block 0 and after it
    blocks = jnp.asarray(w).reshape(len(w), 2, block)
    total0 = np.asarray(jnp.sum(blocks, -1))[:, 0]
    running0 = np.asarray(jnp.cumsum(blocks, -1))[:, 0, -1]
    rows = np.flatnonzero(total0 > running0)
    assert len(rows) >= 5, "no row whose block total rounds above its running sum"
    total = np.asarray(jnp.cumsum(jnp.sum(blocks, -1), -1))[:, -1]
    us, picked = [], []
    for r in rows[:40]:
        # the largest u whose target u * total (float32) is below the block total
        u = np.float32(running0[r] / total[r])
        while np.float32(u * total[r]) < total0[r]:
            u = np.nextafter(u, np.float32(1))
        while np.float32(u * total[r]) >= total0[r]:
            u = np.nextafter(u, np.float32(0))
        if np.float32(u * total[r]) >= running0[r]:  # a target past the running sum
            us.append(u)
            picked.append(r)
    assert len(picked) >= 3, "too few targets between a block's running sum and its total"
    got = np.asarray(_draw(jnp.asarray(us), jnp.asarray(w[picked]), block=block))
    expected = [np.flatnonzero(w[r, :block])[-1] for r in picked]
    np.testing.assert_array_equal(got, expected)


def test_inverse_cdf_never_draws_a_trailing_zero_block():
    """Over ~1200 blocks (a 152k vocabulary in blocks of 128) XLA's cumsum is a tree: the
    running total after trailing zero blocks can exceed the one at the last non-zero
    block.  A target between the two must still draw the last non-zero entry."""
    rng = np.random.default_rng(13)
    n, nb = 200, 1188
    w = (rng.random((n, nb)) ** 6).astype(np.float32)
    last = rng.integers(nb // 2, nb - 1, n)
    w[np.arange(nb)[None] > last[:, None]] = 0.0
    cum = np.asarray(jax.jit(lambda a: jnp.cumsum(a, -1))(jnp.asarray(w)))
    at_last, total = cum[np.arange(n), last], cum[:, -1]
    u = np.zeros(n, np.float32)
    hit = []
    for r in np.flatnonzero(total > at_last):
        x = np.float32(at_last[r] / total[r])
        while np.float32(x * total[r]) < at_last[r]:
            x = np.nextafter(x, np.float32(1))
        if np.float32(x * total[r]) < total[r]:  # a target in [at_last, total)
            u[r] = x
            hit.append(r)
    assert len(hit) >= 5, "no row whose total grows across its trailing zero blocks"
    got = np.asarray(_draw(jnp.asarray(u), jnp.asarray(w), block=1))
    np.testing.assert_array_equal(got[hit], last[hit])


def test_top_k_one_is_the_argmax_and_top_k_of_the_vocabulary_is_no_top_k():
    logits = np.array([[0.3, 1.9, -0.4, 1.7, 0.0], [2.2, -1.0, 0.5, 2.1, 1.0]], np.float32)
    x = np.asarray(filtered_logits(jnp.asarray(logits), temperature=3.0, top_k=1))
    np.testing.assert_array_equal(x, [[-np.inf, 0.0, -np.inf, -np.inf, -np.inf],
                                      [0.0, -np.inf, -np.inf, -np.inf, -np.inf]])
    n = 64
    keys = jax.random.split(jax.random.key(9), n)
    rows = jnp.asarray(np.repeat(logits, n // 2, axis=0))
    common = dict(greedy=False, temperature=jnp.float32(3.0), use_top_p=False,
                  top_p=jnp.float32(1.0))
    tokens, _ = _sample(keys, rows, top_k=1, **common)
    np.testing.assert_array_equal(np.asarray(tokens), np.repeat([1, 0], n // 2))
    # k >= V keeps every token in vocabulary order: the very same draws as no top-k
    free, _ = _sample(keys, rows, top_k=0, **common)
    assert len(np.unique(np.asarray(free))) >= 4  # temperature 3 spreads the draws
    same, _ = _sample(keys, rows, top_k=5, **common)
    np.testing.assert_array_equal(np.asarray(same), np.asarray(free))


@pytest.mark.parametrize("temperature", [0.0, -0.5])
def test_filtered_logits_rejects_a_non_positive_temperature(temperature):
    with pytest.raises(ValueError, match=rf"^filtered_logits: temperature must be > 0, "
                                         rf"got {temperature}$"):
        filtered_logits(jnp.zeros((2, 4)), temperature=temperature)


def test_filtered_logits_keeps_leading_axes():
    """[2, 3, V] logits: each row filtered on its own (top-k 3 at T 0.7 by hand in NumPy)."""
    logits = np.random.default_rng(5).standard_normal((2, 3, 9)).astype(np.float32)
    got = np.asarray(filtered_logits(jnp.asarray(logits), temperature=0.7, top_k=3))
    assert got.shape == (2, 3, 9)
    x = logits.astype(np.float64) / 0.7
    kth = np.sort(x, -1)[..., -3:-2]
    kept = x >= kth
    lse = np.log(np.where(kept, np.exp(x), 0.0).sum(-1, keepdims=True))
    np.testing.assert_allclose(got, np.where(kept, x - lse, -np.inf), atol=1e-5)


def test_top_p_one_keeps_tokens_below_the_float_resolution_of_the_mass():
    """top_p = 1 is no top-p: a token of probability e^-80 (below float32's resolution of
    the total mass, so a nucleus search at mass 1 would drop it) keeps its log-weight."""
    logits = np.array([[0.0, -80.0, -1.0]], np.float32)
    got = np.asarray(filtered_logits(jnp.asarray(logits), temperature=1.0, top_p=1.0))
    expected = logits - np.log(np.exp(logits.astype(np.float64)).sum())
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_full_logprobs_divides_by_the_temperature():
    logits = np.random.default_rng(2).standard_normal((3, 7)).astype(np.float32) * 2
    tokens = np.array([6, 0, 3])
    got = np.asarray(full_logprobs(jnp.asarray(logits), jnp.asarray(tokens), 0.5))
    x = logits.astype(np.float64) / 0.5
    expected = x[np.arange(3), tokens] - np.log(np.exp(x).sum(-1))
    np.testing.assert_allclose(got, expected, atol=1e-5)
