"""Next-token selection: greedy, temperature, top-k, top-p, all in fp32, one key per row.

The sampling distribution of one row is built in the order of Hugging Face's logits
warpers (temperature -> top-k -> top-p):

    x = logits / temperature                       (fp32)
    keep the k largest x (top_k > 0; k is clipped to the vocabulary size)
    among those, in descending order, keep token i iff the probability mass of the
    tokens strictly before it is < top_p  (so the most likely token is always kept)
    token ~ softmax(x restricted to the kept tokens)

The behaviour log-prob returned with each token is log softmax(x)[token] over the FULL
vocabulary, i.e. the policy's probability under the sampling temperature without the
top-k/top-p truncation: that is what a teacher-forced forward of the trainer computes
(TRL / Tunix GRPO). Greedy decoding (temperature 0) returns temperature-1 log-probs.

Nothing is sorted over the vocabulary (XLA's sort is slow on CPU): top-p finds its
threshold by bisection and a token is drawn by inverse CDF from one uniform per row.
Tokens tied with the last token of the nucleus are all kept (Hugging Face breaks such
ties by sort order).

Randomness: the key of output row r at decode step t is
    fold_in(fold_in(fold_in(key(seed), sample_id[r]), sample_index[r]), t)
so a row's draws depend on its identity only, never on the batch it was generated in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def row_keys(seed: jax.Array, sample_ids: jax.Array, sample_index: jax.Array) -> jax.Array:
    """One typed PRNG key per output row from (seed, sample id, sample index)."""
    base = jax.random.key(jnp.asarray(seed, jnp.uint32))

    def one(sid, idx):
        return jax.random.fold_in(jax.random.fold_in(base, sid), idx)

    return jax.vmap(one)(sample_ids.astype(jnp.uint32), sample_index.astype(jnp.uint32))


def step_keys(keys: jax.Array, step: jax.Array) -> jax.Array:
    """The rows' keys for decode step `step` (0 = the token sampled from the prefill): one
    step for every row, or one per row [R] (rows of different ages in continuous batching)."""
    steps = jnp.broadcast_to(jnp.asarray(step, jnp.int32), keys.shape)
    return jax.vmap(jax.random.fold_in)(keys, steps)


def nucleus_threshold(probs: jax.Array, top_p: jax.Array) -> jax.Array:
    """Per row, the probability p(k*) of the last token of the nucleus [R, 1].

    With the probabilities sorted in descending order, k* is the first index whose
    cumulative mass reaches top_p; {p >= p(k*)} is then the top-p set (ties with p(k*)
    included). Found without sorting (sorting the vocabulary is slow on CPU) as the largest
    threshold t with sum(p >= t) >= top_p, by bisection on the fp32 bit patterns (monotone
    for non-negative floats): 31 halvings make it exact.
    """
    bits = jax.lax.bitcast_convert_type(probs, jnp.int32)
    goal = top_p * jnp.sum(probs, axis=-1, keepdims=True)
    lo = jnp.zeros(goal.shape, jnp.int32)  # invariant: mass(p >= lo) >= goal
    hi = jnp.max(bits, axis=-1, keepdims=True) + 1  # invariant: mass(p >= hi) < goal

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        enough = jnp.sum(jnp.where(bits >= mid, probs, 0.0), axis=-1, keepdims=True) >= goal
        return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid)

    lo, _ = jax.lax.fori_loop(0, 31, halve, (lo, hi))
    return jax.lax.bitcast_convert_type(lo, jnp.float32)


def candidate_probs(x: jax.Array, top_k: int, use_top_p: bool, top_p: jax.Array
                    ) -> tuple[jax.Array, jax.Array | None]:
    """The sampling distribution, given temperature-scaled fp32 logits x [R, V].

    Returns (unnormalised probabilities [R, K] with 0 on dropped candidates, their
    vocabulary ids [R, K], or None when the candidates are the whole vocabulary in order).
    top_k and use_top_p are static.
    """
    ids = None
    if top_k > 0 and top_k < x.shape[-1]:
        x, ids = jax.lax.top_k(x, top_k)
    probs = jax.nn.softmax(x, axis=-1)
    if use_top_p:
        probs = jnp.where(probs >= nucleus_threshold(probs, top_p), probs, 0.0)
    return probs, ids


def inverse_cdf_sample(u: jax.Array, weights: jax.Array, block: int = 128) -> jax.Array:
    """Index i with probability weights[i] / sum(weights), per row, from one uniform
    u [R] in [0, 1): the first i whose cumulative weight exceeds u * total.

    Two-level search (blocks of `block`, then inside the chosen block) so that only short
    cumulative sums are taken: one draw per row instead of a Gumbel per vocabulary entry.
    A zero-weight entry is never returned (cumulative sums do not grow across it).
    """
    r, v = weights.shape
    pad = -v % block
    w = jnp.pad(weights, ((0, 0), (0, pad))).reshape(r, -1, block)
    block_cum = jnp.cumsum(jnp.sum(w, axis=-1), axis=-1)  # [R, nb]
    target = u * block_cum[:, -1]
    last_block = w.shape[1] - 1 - jnp.argmax((jnp.sum(w, -1) > 0)[:, ::-1], axis=-1)
    b = jnp.minimum(jnp.sum(block_cum <= target[:, None], axis=-1), last_block)
    before = jnp.where(b > 0, jnp.take_along_axis(block_cum, jnp.maximum(b - 1, 0)[:, None],
                                                  axis=-1)[:, 0], 0.0)
    inner = jnp.take_along_axis(w, b[:, None, None], axis=1)[:, 0]  # [R, block]
    inner_cum = jnp.cumsum(inner, axis=-1)
    last = block - 1 - jnp.argmax((inner > 0)[:, ::-1], axis=-1)
    j = jnp.minimum(jnp.sum(inner_cum <= (target - before)[:, None], axis=-1), last)
    return (b * block + j).astype(jnp.int32)


def filtered_logits(logits: jax.Array, *, temperature: float, top_k: int = 0,
                    top_p: float = 1.0) -> jax.Array:
    """The sampling distribution's log-weights over the full vocabulary [..., V], fp32
    (-inf on dropped tokens): softmax of this is exactly what `sample_tokens` draws from."""
    if temperature <= 0:
        raise ValueError(f"filtered_logits: temperature must be > 0, got {temperature}")
    x = logits.astype(jnp.float32) / temperature
    flat = x.reshape(-1, x.shape[-1])
    probs, ids = candidate_probs(flat, top_k, top_p < 1.0, jnp.float32(top_p))
    if ids is not None:
        full = jnp.zeros_like(flat)
        probs = jax.vmap(lambda f, i, p: f.at[i].set(p))(full, ids, probs)
    return jnp.log(probs).reshape(x.shape)


def full_logprobs(logits: jax.Array, tokens: jax.Array, temperature: jax.Array | float
                  ) -> jax.Array:
    """log softmax(logits / temperature)[token] over the full vocabulary, fp32 [R]."""
    x = logits.astype(jnp.float32) / temperature
    picked = jnp.take_along_axis(x, tokens[:, None], axis=-1)[:, 0]
    return picked - jax.nn.logsumexp(x, axis=-1)


def sample_tokens(keys: jax.Array, logits: jax.Array, *, greedy: bool, temperature: jax.Array,
                  top_k: int, use_top_p: bool, top_p: jax.Array,
                  suppress: tuple[int, ...] = ()) -> tuple[jax.Array, jax.Array]:
    """Picks one token per row. logits [R, V] (any float dtype), keys [R] typed keys.

    greedy/top_k/use_top_p/suppress are static; temperature/top_p may be traced scalars.
    `suppress` ids are never picked (their logits become -inf before top-k/top-p); the
    log-probs stay those of the full, unsuppressed distribution.
    Returns (tokens int32 [R], behaviour log-probs fp32 [R]) as described in the module
    docstring.
    """
    logits = logits.astype(jnp.float32)
    banned = jnp.asarray(suppress, jnp.int32)
    if greedy:
        choosable = logits.at[:, banned].set(-jnp.inf) if suppress else logits
        tokens = jnp.argmax(choosable, axis=-1).astype(jnp.int32)
        return tokens, full_logprobs(logits, tokens, 1.0)
    x = logits / temperature
    choosable = x.at[:, banned].set(-jnp.inf) if suppress else x
    probs, ids = candidate_probs(choosable, top_k, use_top_p, top_p)
    choice = inverse_cdf_sample(jax.vmap(jax.random.uniform)(keys), probs)
    if ids is None:
        tokens = choice.astype(jnp.int32)
    else:
        tokens = jnp.take_along_axis(ids, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)
    picked = jnp.take_along_axis(x, tokens[:, None], axis=-1)[:, 0]
    return tokens, picked - jax.nn.logsumexp(x, axis=-1)
