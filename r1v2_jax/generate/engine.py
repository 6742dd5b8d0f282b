"""The compiled generation programs: a prefill, then a KV-cached decode `while_loop`.

Two jitted programs per `Plan`, run back to back on device (the prefill's outputs feed the
decode program as device arrays: no host round trip between them):

    prefill   B prompts [B, P] (+ image tiles) -> per-layer prompt KV [B, P, Hkv, D],
              the prompt kv_mask [B, P] and the logits of each prompt's last token
    decode    static (`Plan.slots == 0`, here): the prompt KV is repeated to R = B*G rows
              (prompt-major: row b*G + g is sample g of prompt b), extended by N empty
              slots, and every row decodes until all have stopped;
              continuous (`Plan.slots > 0`, `continuous.py`): a fixed number of slots,
              each refilled with the next pending (prompt, sample) when its row stops.

Cache layout of a row:

    slots      [0, P)      the prompt, left-padded so its last token sits in slot P-1
                           (padding slots are masked out)
               [P, P+N)    generated tokens; token j is written at slot P+j
    positions  prompt token i -> i; generated token j -> length + j

Under a mesh (`Plan.mesh`) both programs are traced inside `activation_sharding(mesh,
rules)`: parameters in their training layout, rows over the batch axes (data, fsdp), KV
caches by `sharding.kv_cache_sharding` (rows over the batch axes, KV heads over tensor).

Programs are cached per `Plan`; `engine_stats()` counts plans compiled, prefills run (and
their rows), output rows, decode loop iterations and the live row-steps among them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from r1v2_jax.generate.decode import decode_step, split_cache, split_layers
from r1v2_jax.generate.sampling import full_logprobs, row_keys, sample_tokens, step_keys
from r1v2_jax.models import VLM, KVCache, VLMConfig


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything static about one compiled generation program."""

    config: VLMConfig
    batch: int  # B prompts
    prompt_len: int  # P (bucketed)
    new_tokens: int  # N (bucketed)
    num_tiles: int  # image tiles (bucketed); 0 = text only
    num_samples: int  # G
    greedy: bool
    top_k: int
    use_top_p: bool
    eos_ids: tuple[int, ...]
    pad_id: int
    suppress: tuple[int, ...]  # never generated
    slots: int = 0  # 0: static batch of B*G rows; > 0: continuous batching on this many slots
    use_penalty: bool = False  # repetition penalty on (its value is traced)
    mesh: Mesh | None = None
    rules: tuple | None = None

    @property
    def rows(self) -> int:
        """Rows of the decode loop."""
        return self.slots or self.batch * self.num_samples


@dataclasses.dataclass
class EngineStats:
    """Host-side counters. compilations: plans traced (each a prefill and a decode
    program); prefill_calls / prefill_rows: prefills executed and the prompt rows they
    processed; decode_rows: output rows; decode_steps: decode loop iterations;
    row_steps / live_row_steps: decode rows x iterations, and those holding an unfinished
    sample (occupancy = live / all)."""

    compilations: int = 0
    calls: int = 0
    prefill_calls: int = 0
    prefill_rows: int = 0
    decode_rows: int = 0
    decode_steps: int = 0
    row_steps: int = 0
    live_row_steps: int = 0


_STATS = EngineStats()
_PROGRAMS: dict[Any, Any] = {}  # plan (or prefill key) -> jitted fn


def engine_stats() -> EngineStats:
    return dataclasses.replace(_STATS)


def reset_engine_stats() -> None:
    global _STATS
    _STATS = EngineStats()


def clear_program_cache() -> None:
    _PROGRAMS.clear()


# ----------------------------------------------------------------------------- placement

def spmd_axes(plan: Plan, rows: int) -> tuple[str, ...] | None:
    """The mesh axes that split decode rows (those of the "batch" rule, when `rows`
    divides over them): the vmapped rows of `decode_step` stay split over them."""
    if plan.mesh is None:
        return None
    axes = dict(plan.rules).get("batch") or ()
    axes = tuple(a for a in ((axes,) if isinstance(axes, str) else axes)
                 if plan.mesh.shape[a] > 1)
    n = 1
    for a in axes:
        n *= plan.mesh.shape[a]
    return axes if axes and rows % n == 0 else None


def constrain_caches(plan: Plan, caches):
    """Per-layer KV caches [R, S, Hkv, D] pinned to the KV cache rule (no-op off a mesh)."""
    if plan.mesh is None:
        return caches
    from r1v2_jax.sharding import kv_cache_sharding

    def pin(x):
        return jax.lax.with_sharding_constraint(x, kv_cache_sharding(plan.mesh, plan.rules,
                                                                     x.shape))
    return [(pin(k), pin(v)) for k, v in caches]


def traced_on_mesh(plan: Plan, fn, rows: int | None = None):
    """`fn` traced inside the plan's activation sharding (unchanged off a mesh). With
    `rows` (a decode program): the axes that split the rows (`spmd_axes`) are taken out of
    every other rule, since `decode_step`'s vmap reserves them for the rows."""
    if plan.mesh is None:
        return fn
    from r1v2_jax.sharding import traced_with_activation_sharding

    rules = plan.rules
    reserved = spmd_axes(plan, rows) if rows else None
    if reserved:
        def strip(axes):
            axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
            kept = tuple(a for a in axes if a not in reserved)
            return kept or None
        rules = tuple((name, axes if name == "batch" else strip(axes)) for name, axes in rules)
    return traced_with_activation_sharding(fn, plan.mesh, rules)


def is_stop_fn(plan: Plan):
    eos = jnp.asarray(plan.eos_ids, jnp.int32)

    def is_stop(tokens):
        if not plan.eos_ids:
            return jnp.zeros(tokens.shape, bool)
        return jnp.any(tokens[:, None] == eos[None, :], axis=-1)
    return is_stop


def penalize(logits, seen, penalty):
    """Hugging Face's repetition penalty: the logit of every token already in the sequence
    (prompt or generated) is divided by `penalty` when positive, multiplied when negative."""
    return jnp.where(seen, jnp.where(logits < 0, logits * penalty, logits / penalty), logits)


def mark_seen(seen, tokens):
    """seen [R, V] with each row's new token [R] marked (None when the penalty is off)."""
    if seen is None:
        return None
    return seen.at[jnp.arange(tokens.shape[0]), tokens].set(True)


def picker(plan: Plan, temperature, top_p, penalty):
    """(logits [R, V], keys [R], steps, seen [R, V] or None) -> (tokens, behaviour
    log-probs). With the repetition penalty the token is drawn from the penalised logits;
    the log-prob stays the policy's, log softmax(logits / T) (what the trainer scores)."""

    def pick(logits, keys, step, seen):
        choose = logits if seen is None else penalize(logits, seen, penalty)
        tok, lp = sample_tokens(step_keys(keys, step), choose, greedy=plan.greedy,
                                temperature=temperature, top_k=plan.top_k,
                                use_top_p=plan.use_top_p, top_p=top_p, suppress=plan.suppress)
        if seen is not None:
            lp = full_logprobs(logits, tok, 1.0 if plan.greedy else temperature)
        return tok, lp
    return pick


# ----------------------------------------------------------------------------- prefill

def prefill(plan: Plan, params, ids, lengths, pixels):
    """Prompt rows [B, P] -> (per-layer KV [B, P, Hkv, D], prompt kv_mask [B, P], fp32
    logits of the last prompt token [B, V], the prompt's tokens as a [B, V] mask when the
    repetition penalty is on, else None)."""
    b, p = ids.shape
    model = VLM(plan.config)
    slot = jnp.arange(p, dtype=jnp.int32)[None, :]
    pad_before = (p - lengths)[:, None]
    positions = jnp.maximum(slot - pad_before, 0)
    kv_mask = slot >= pad_before
    out = model.apply({"params": params}, ids, pixels, positions=positions,
                      cache=KVCache.init(plan.config, b, p), cache_index=0, kv_mask=kv_mask,
                      return_logits=False)
    logits = model.apply({"params": params}, out.hidden[:, -1], method=VLM.logits)
    seen = None
    if plan.use_penalty:  # real prompt tokens only (HF would also count the padding)
        vocab = plan.config.text.vocab_size
        seen = jnp.zeros((b, vocab), jnp.int32).at[jnp.arange(b)[:, None], ids].add(
            kv_mask.astype(jnp.int32)) > 0
    return (constrain_caches(plan, split_cache(out.cache)), kv_mask, logits.astype(jnp.float32),
            seen)


def prefill_key(plan: Plan):
    """Plans that differ only in their decode share one prefill program."""
    return ("prefill", plan.config, plan.batch, plan.prompt_len, plan.num_tiles,
            plan.use_penalty, plan.mesh, plan.rules)


def prefill_program(plan: Plan):
    """The jitted `prefill` of the plan: (params, ids, lengths, pixels)."""
    key = prefill_key(plan)
    if key not in _PROGRAMS:
        _PROGRAMS[key] = jax.jit(traced_on_mesh(plan, lambda *a: prefill(plan, *a)))
    return _PROGRAMS[key]


# ----------------------------------------------------------------------------- static decode

def _share(plan: Plan, caches, kv_mask):
    """Prompt caches of B rows -> decode caches of B*G rows with N empty slots appended
    (prompt-major repeat: the prompts are not recomputed)."""
    g, n = plan.num_samples, plan.new_tokens
    grow = ((0, 0), (0, n), (0, 0), (0, 0))
    caches = [(jnp.pad(jnp.repeat(k, g, axis=0), grow), jnp.pad(jnp.repeat(v, g, axis=0), grow))
              for k, v in caches]
    kv_mask = jnp.pad(jnp.repeat(kv_mask, g, axis=0), ((0, 0), (0, n)), constant_values=True)
    return constrain_caches(plan, caches), kv_mask


def static_decode(plan: Plan, params, caches, kv_mask, logits, seen, lengths, sample_ids,
                  sample_index, seed, temperature, top_p, penalty, max_new_tokens):
    """Decodes all B*G rows together until every row has stopped (or max_new_tokens).
    Returns (tokens, logprobs [R, N], lengths, truncated [R], iterations, live row-steps)."""
    _STATS.compilations += 1  # runs once per trace
    g, n, p = plan.num_samples, plan.new_tokens, plan.prompt_len
    is_stop, pick = is_stop_fn(plan), picker(plan, temperature, top_p, penalty)
    caches, kv_mask = _share(plan, caches, kv_mask)
    lengths = jnp.repeat(lengths, g)
    rows = lengths.shape[0]
    keys = row_keys(seed, sample_ids, sample_index)
    seen = None if seen is None else jnp.repeat(seen, g, axis=0)
    tok, lp = pick(jnp.repeat(logits, g, axis=0), keys, 0, seen)
    seen = mark_seen(seen, tok)
    tokens = jnp.full((rows, n), plan.pad_id, jnp.int32).at[:, 0].set(tok)
    logprobs = jnp.zeros((rows, n), jnp.float32).at[:, 0].set(lp)
    done = is_stop(tok)
    gen_len = jnp.ones((rows,), jnp.int32)
    layers = split_layers(params)  # sliced once, outside the loop (see decode.py)
    spmd = spmd_axes(plan, rows)

    def cond(state):
        step, done = state[0], state[5]
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(state):
        step, caches, last, tokens, logprobs, done, gen_len, live, seen = state
        live = live + jnp.sum(~done)
        logits, caches = decode_step(plan.config, params, layers, caches, last,
                                     lengths + step - 1, p + step - 1, kv_mask, spmd)
        tok, lp = pick(logits, keys, step, seen)
        tok = jnp.where(done, plan.pad_id, tok)
        lp = jnp.where(done, 0.0, lp)
        tokens = tokens.at[:, step].set(tok)
        logprobs = logprobs.at[:, step].set(lp)
        gen_len = jnp.where(done, gen_len, step + 1)
        done = done | is_stop(tok)
        return (step + 1, constrain_caches(plan, caches), tok, tokens, logprobs, done, gen_len,
                live, mark_seen(seen, tok))

    state = (jnp.int32(1), caches, tok, tokens, logprobs, done, gen_len, jnp.int32(rows), seen)
    step, _, _, tokens, logprobs, done, gen_len, live, _ = jax.lax.while_loop(cond, body, state)
    return tokens, logprobs, gen_len, ~done, step, live


def decode_program(plan: Plan):
    """The jitted decode of the plan: (params, caches, kv_mask, logits, seen, lengths,
    sample_ids, sample_index, seed, temperature, top_p, penalty, max_new_tokens): the
    prefill's outputs, then the rows' identities and the traced sampling values."""
    if plan not in _PROGRAMS:
        if plan.slots:
            from r1v2_jax.generate.continuous import continuous_decode as fn
        else:
            fn = static_decode
        out = None
        if plan.mesh is not None:  # small outputs, replicated: every process can read them
            out = jax.sharding.NamedSharding(plan.mesh, jax.sharding.PartitionSpec())
        _PROGRAMS[plan] = jax.jit(traced_on_mesh(plan, lambda *a: fn(plan, *a), plan.rows),
                                  out_shardings=out)
    return _PROGRAMS[plan]


def run_plan(plan: Plan, params, ids, lengths, pixels, sample_ids, sample_index, seed,
             temperature, top_p, max_new_tokens, penalty: float = 1.0):
    """Runs (compiling on first use) the programs of `plan`. Inputs are already bucketed
    and placed: ids [B, P] left-padded, lengths [B], pixels [tiles, H, W, 3] or None,
    sample_ids and sample_index [B*G]. Returns (tokens, logprobs [B*G, N], lengths,
    truncated [B*G])."""
    caches, kv_mask, logits, seen = prefill_program(plan)(params, ids, lengths, pixels)
    tokens, logprobs, gen_len, truncated, steps, live = decode_program(plan)(
        params, caches, kv_mask, logits, seen, lengths, sample_ids, sample_index,
        jnp.uint32(seed), jnp.float32(temperature), jnp.float32(top_p), jnp.float32(penalty),
        jnp.int32(max_new_tokens))
    _STATS.calls += 1
    _STATS.prefill_calls += 1
    _STATS.prefill_rows += plan.batch
    _STATS.decode_rows += plan.batch * plan.num_samples
    steps = int(steps)  # the counters wait for the program (the outputs are needed anyway)
    _STATS.decode_steps += steps
    _STATS.row_steps += steps * plan.rows
    _STATS.live_row_steps += int(live)
    return tokens, logprobs, gen_len, truncated
