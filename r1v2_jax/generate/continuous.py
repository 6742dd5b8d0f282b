"""Continuous batching: a fixed number of decode slots, refilled as rows stop.

The work list is the R = B*G (prompt, sample) pairs in prompt-major order. The B prompts
are prefilled once (`engine.prefill`: the G samples of a prompt share it); that prompt
KV store [B, P] stays on device. The decode loop holds `slots` rows, each with its own
KV cache of P + N slots (recycled: memory is slots x (P+N), not R x (P+N)):

    every iteration
      refill   each free slot takes the next pending pair (in order): the prompt's KV is
               copied from the store into the slot's [0, P), its first token is sampled
               from the prompt's last logits (step 0), the slot becomes live (unless that
               token already stops it)
      decode   one `decode_step` for all slots, each writing its own cache slot
               P + step - 1 at position length + step - 1; live slots sample token `step`,
               write it to their pair's output row, and stop on a stop id or at
               max_new_tokens
    until no slot is live and no pair is pending.

A pair's token at step t is drawn with key (seed, sample id, sample index, t), exactly as
in the static engine, and the maths of a row does not involve its neighbours, so a
sample's tokens, log-probs and stop reason do not depend on its slot or on which other
samples it decoded beside. The slot's stale cache beyond the current step is never read
(causal mask), so a refilled slot needs no clearing.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from r1v2_jax.generate import engine
from r1v2_jax.generate.decode import decode_step, split_layers
from r1v2_jax.generate.engine import (Plan, constrain_caches, is_stop_fn, mark_seen, picker,
                                      spmd_axes)
from r1v2_jax.generate.sampling import row_keys


class _Loop(NamedTuple):
    """The decode loop's state: per slot, then per sample of the work list."""

    it: jax.Array  # iterations run
    busy: jax.Array  # live slot-steps (occupancy numerator)
    next_item: jax.Array  # first pending sample of the work list
    item: jax.Array  # [S] the sample in each slot
    step: jax.Array  # [S] tokens its sample has so far
    live: jax.Array  # [S] the slot's sample is unfinished
    last: jax.Array  # [S] its last token
    caches: list  # per layer (k, v) [S, P+N, Hkv, D]
    kv_mask: jax.Array  # [S, P+N]
    seen: jax.Array | None  # [S, V] tokens in the row (repetition penalty), or None
    tokens: jax.Array  # [R, N] outputs per sample
    logprobs: jax.Array  # [R, N]
    gen_len: jax.Array  # [R]
    stopped: jax.Array  # [R] ended by a stop id


def continuous_decode(plan: Plan, params, store, store_mask, store_logits, store_seen,
                      lengths, sample_ids, sample_index, seed, temperature, top_p, penalty,
                      max_new_tokens):
    """store: per-layer prompt KV [B, P, Hkv, D]; store_mask [B, P]; store_logits [B, V];
    store_seen [B, V] or None (repetition penalty off); lengths [B]; sample_ids /
    sample_index [R]. Returns (tokens, logprobs [R, N], lengths,
    truncated [R], iterations, live slot-steps) like `engine.static_decode`."""
    engine._STATS.compilations += 1  # runs once per trace
    g, n, p, s = plan.num_samples, plan.new_tokens, plan.prompt_len, plan.slots
    r = plan.batch * g
    is_stop, pick = is_stop_fn(plan), picker(plan, temperature, top_p, penalty)
    keys = row_keys(seed, sample_ids, sample_index)  # [R]
    caches = constrain_caches(plan, [(jnp.zeros((s, p + n) + k.shape[2:], k.dtype),
                                      jnp.zeros((s, p + n) + v.shape[2:], v.dtype))
                                     for k, v in store])
    kv_mask = jnp.ones((s, p + n), bool)  # [P, P+N): written before read (causal)
    layers = split_layers(params)  # sliced once, outside the loop (see decode.py)
    spmd = spmd_axes(plan, s)

    def refill(st: _Loop) -> _Loop:
        free = ~st.live
        new = st.next_item + jnp.cumsum(free) - 1
        take = free & (new < r)
        new_item = jnp.where(take, new, 0)
        prompt = new_item // g
        put = lambda old, fresh: old.at[:, :p].set(
            jnp.where(take.reshape((s,) + (1,) * (old.ndim - 1)), fresh[prompt], old[:, :p]))
        caches = constrain_caches(plan, [(put(k, sk), put(v, sv))
                                         for (k, v), (sk, sv) in zip(st.caches, store)])
        seen = st.seen
        if seen is not None:
            seen = jnp.where(take[:, None], store_seen[prompt], seen)
        tok, lp = pick(store_logits[prompt], keys[new_item], 0, seen)
        if seen is not None:
            seen = jnp.where(take[:, None], mark_seen(seen, tok), seen)
        out = jnp.where(take, new_item, r)  # r: out of bounds, dropped
        stop = is_stop(tok)
        return st._replace(
            next_item=st.next_item + jnp.sum(take), item=jnp.where(take, new_item, st.item),
            step=jnp.where(take, 1, st.step),
            live=jnp.where(take, ~stop & (max_new_tokens > 1), st.live),
            last=jnp.where(take, tok, st.last), caches=caches,
            kv_mask=put(st.kv_mask, store_mask), seen=seen,
            tokens=st.tokens.at[out, 0].set(tok, mode="drop"),
            logprobs=st.logprobs.at[out, 0].set(lp, mode="drop"),
            gen_len=st.gen_len.at[out].set(1, mode="drop"),
            stopped=st.stopped.at[out].set(stop, mode="drop"))

    def cond(st: _Loop):
        return jnp.any(st.live) | (st.next_item < r)

    def body(st: _Loop) -> _Loop:
        st = jax.lax.cond(jnp.any(~st.live) & (st.next_item < r), refill, lambda x: x, st)
        at = jnp.clip(st.step - 1, 0, n - 1)  # idle slots write their own stale tail
        logits, caches = decode_step(plan.config, params, layers, st.caches, st.last,
                                     lengths[st.item // g] + at, p + at, st.kv_mask, spmd)
        tok, lp = pick(logits, keys[st.item], st.step, st.seen)
        out = jnp.where(st.live, st.item, r)
        col = jnp.clip(st.step, 0, n - 1)
        stop = is_stop(tok)
        return st._replace(
            it=st.it + 1, busy=st.busy + jnp.sum(st.live), step=st.step + 1,
            live=st.live & ~stop & (st.step + 1 < max_new_tokens), last=tok,
            caches=constrain_caches(plan, caches), seen=mark_seen(st.seen, tok),
            tokens=st.tokens.at[out, col].set(tok, mode="drop"),
            logprobs=st.logprobs.at[out, col].set(lp, mode="drop"),
            gen_len=st.gen_len.at[out].set(st.step + 1, mode="drop"),
            stopped=st.stopped.at[out].set(stop, mode="drop"))

    zeros = jnp.zeros((s,), jnp.int32)
    st = _Loop(it=jnp.int32(0), busy=jnp.int32(0), next_item=jnp.int32(0), item=zeros,
               step=zeros, live=jnp.zeros((s,), bool), last=zeros, caches=caches,
               kv_mask=kv_mask,
               seen=None if store_seen is None else jnp.zeros((s, store_seen.shape[1]), bool),
               tokens=jnp.full((r, n), plan.pad_id, jnp.int32),
               logprobs=jnp.zeros((r, n), jnp.float32), gen_len=jnp.zeros((r,), jnp.int32),
               stopped=jnp.zeros((r,), bool))
    st = jax.lax.while_loop(cond, body, st)
    return st.tokens, st.logprobs, st.gen_len, ~st.stopped, st.it, st.busy
