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
    """The rows' keys for decode step `step` (0 = the token sampled from the prefill)."""
    return jax.vmap(lambda k: jax.random.fold_in(k, step))(keys)


def truncated_candidates(x: jax.Array, top_k: int, use_top_p: bool, top_p: jax.Array
                         ) -> tuple[jax.Array, jax.Array | None]:
    """Candidate logits after top-k/top-p, given temperature-scaled fp32 logits x [R, V].

    Returns (candidate logits [R, K], their vocabulary ids [R, K] or None when the
    candidates are the whole vocabulary in order). Dropped candidates hold -inf.
    top_k and use_top_p are static: they decide whether a (partial) sort is needed.
    """
    vocab = x.shape[-1]
    k = min(top_k, vocab) if top_k > 0 else (vocab if use_top_p else 0)
    if k == 0:
        return x, None
    vals, ids = jax.lax.top_k(x, k)  # descending
    if use_top_p:
        probs = jax.nn.softmax(vals, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        vals = jnp.where(mass_before < top_p, vals, -jnp.inf)
    return vals, ids


def filtered_logits(logits: jax.Array, *, temperature: float, top_k: int = 0,
                    top_p: float = 1.0) -> jax.Array:
    """The sampling distribution's logits over the full vocabulary [..., V], fp32 (-inf
    on dropped tokens): softmax of this is exactly what `sample_tokens` draws from."""
    if temperature <= 0:
        raise ValueError(f"filtered_logits: temperature must be > 0, got {temperature}")
    x = logits.astype(jnp.float32) / temperature
    flat = x.reshape(-1, x.shape[-1])
    vals, ids = truncated_candidates(flat, top_k, top_p < 1.0, jnp.float32(top_p))
    if ids is None:
        return x
    full = jnp.full_like(flat, -jnp.inf)
    full = jax.vmap(lambda f, i, v: f.at[i].set(v))(full, ids, vals)
    return full.reshape(x.shape)


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
    vals, ids = truncated_candidates(choosable, top_k, use_top_p, top_p)
    choice = jax.vmap(jax.random.categorical)(keys, vals)
    if ids is None:
        tokens = choice.astype(jnp.int32)
    else:
        tokens = jnp.take_along_axis(ids, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)
    picked = jnp.take_along_axis(x, tokens[:, None], axis=-1)[:, 0]
    return tokens, picked - jax.nn.logsumexp(x, axis=-1)
