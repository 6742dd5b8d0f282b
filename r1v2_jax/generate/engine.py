"""The compiled generation program: one prefill, then a KV-cached decode `while_loop`.

Layout of one call (B prompts, G samples each, R = B*G output rows):

    cache slots  [0, P)           the prompts, left-padded so every row's last prompt
                                  token sits in slot P-1 (padding slots are masked out)
                 [P, P+N)         generated tokens; token j is written at slot P+j
    positions    prompt token i of a row -> i; generated token j -> length + j

The prompt KV cache ([B, P] slots) is computed once for the B prompts, then repeated to
R rows (prompt-major: row b*G + g is sample g of prompt b) and extended by N empty slots.
Decode stops when every row has emitted a stop token or after `max_new_tokens` (a traced
bound below the bucket N); tokens after a row's stop are `pad_id` with log-prob 0.

Programs are cached per `Plan` (every static shape and option); `engine_stats()` counts
traces (= compilations) and the prefills actually executed, for tests and benchmarks.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from r1v2_jax.generate.decode import decode_step, split_cache, split_layers
from r1v2_jax.generate.sampling import row_keys, sample_tokens, step_keys
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


@dataclasses.dataclass
class EngineStats:
    """Host-side counters. compilations: programs traced; prefill_calls / prefill_rows:
    prefills executed and the prompt rows they processed; decode_rows: output rows."""

    compilations: int = 0
    calls: int = 0
    prefill_calls: int = 0
    prefill_rows: int = 0
    decode_rows: int = 0


@dataclasses.dataclass
class _ProgramInfo:
    prefills: int = 0
    prefill_rows: int = 0


_STATS = EngineStats()
_PROGRAMS: dict[Plan, tuple] = {}  # plan -> (jitted fn, _ProgramInfo)


def engine_stats() -> EngineStats:
    return dataclasses.replace(_STATS)


def reset_engine_stats() -> None:
    global _STATS
    _STATS = EngineStats()


def clear_program_cache() -> None:
    _PROGRAMS.clear()


def _prefill(plan: Plan, info: _ProgramInfo, params, ids, lengths, pixels):
    """Prompt rows [B, P] -> (KV cache [L, B, P, ...], prompt kv_mask [B, P], last logits)."""
    info.prefills += 1  # trace-time bookkeeping: how many prefills this program holds
    info.prefill_rows += ids.shape[0]
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
    return out.cache, kv_mask, logits.astype(jnp.float32)


def _share(cache: KVCache, kv_mask, num_samples: int, new_tokens: int):
    """Prompt cache of B rows -> per-layer decode caches of B*G rows with `new_tokens`
    empty slots appended (prompt-major repeat: the prompts are not recomputed)."""
    grow = ((0, 0), (0, new_tokens), (0, 0), (0, 0))
    caches = [(jnp.pad(jnp.repeat(k, num_samples, axis=0), grow),
               jnp.pad(jnp.repeat(v, num_samples, axis=0), grow)) for k, v in split_cache(cache)]
    kv_mask = jnp.pad(jnp.repeat(kv_mask, num_samples, axis=0), ((0, 0), (0, new_tokens)),
                      constant_values=True)
    return caches, kv_mask


def _program(plan: Plan, info: _ProgramInfo):
    g, n, p = plan.num_samples, plan.new_tokens, plan.prompt_len
    eos = jnp.asarray(plan.eos_ids, jnp.int32)

    def is_stop(tokens):
        if not plan.eos_ids:
            return jnp.zeros(tokens.shape, bool)
        return jnp.any(tokens[:, None] == eos[None, :], axis=-1)

    def run(params, ids, lengths, pixels, sample_ids, sample_index, seed, temperature, top_p,
            max_new_tokens):
        _STATS.compilations += 1  # runs once per trace
        info.prefills = info.prefill_rows = 0
        cache, kv_mask, logits = _prefill(plan, info, params, ids, lengths, pixels)
        # Share the prefill: every sample of a prompt starts from the same cache.
        caches, kv_mask = _share(cache, kv_mask, g, n)
        lengths = jnp.repeat(lengths, g)
        logits = jnp.repeat(logits, g, axis=0)
        rows = lengths.shape[0]
        keys = row_keys(seed, sample_ids, sample_index)

        def pick(logits, step):
            return sample_tokens(step_keys(keys, step), logits, greedy=plan.greedy,
                                 temperature=temperature, top_k=plan.top_k,
                                 use_top_p=plan.use_top_p, top_p=top_p,
                                 suppress=plan.suppress)

        tok, lp = pick(logits, 0)
        tokens = jnp.full((rows, n), plan.pad_id, jnp.int32).at[:, 0].set(tok)
        logprobs = jnp.zeros((rows, n), jnp.float32).at[:, 0].set(lp)
        done = is_stop(tok)
        gen_len = jnp.ones((rows,), jnp.int32)

        def cond(state):
            step, _, _, _, _, done, _ = state
            return (step < max_new_tokens) & ~jnp.all(done)

        layers = split_layers(params)  # sliced once, outside the loop (see decode.py)

        def body(state):
            step, caches, last, tokens, logprobs, done, gen_len = state
            logits, caches = decode_step(plan.config, params, layers, caches, last,
                                         lengths + step - 1, p + step - 1, kv_mask)
            tok, lp = pick(logits, step)
            tok = jnp.where(done, plan.pad_id, tok)
            lp = jnp.where(done, 0.0, lp)
            tokens = tokens.at[:, step].set(tok)
            logprobs = logprobs.at[:, step].set(lp)
            gen_len = jnp.where(done, gen_len, step + 1)
            done = done | is_stop(tok)
            return step + 1, caches, tok, tokens, logprobs, done, gen_len

        state = (jnp.int32(1), caches, tok, tokens, logprobs, done, gen_len)
        _, _, _, tokens, logprobs, done, gen_len = jax.lax.while_loop(cond, body, state)
        return tokens, logprobs, gen_len, ~done

    return jax.jit(run)


def run_plan(plan: Plan, params, ids, lengths, pixels, sample_ids, sample_index, seed,
             temperature, top_p, max_new_tokens):
    """Runs (compiling on first use) the program of `plan`. Inputs are already bucketed:
    ids [B, P] left-padded, lengths [B], pixels [tiles, H, W, 3] or None, sample_ids and
    sample_index [B*G]. Returns (tokens, logprobs [B*G, N], lengths, truncated [B*G])."""
    if plan not in _PROGRAMS:
        info = _ProgramInfo()
        _PROGRAMS[plan] = (_program(plan, info), info)
    fn, info = _PROGRAMS[plan]
    out = fn(params, ids, lengths, pixels, sample_ids, sample_index, jnp.uint32(seed),
             jnp.float32(temperature), jnp.float32(top_p), jnp.int32(max_new_tokens))
    _STATS.calls += 1
    _STATS.prefill_calls += info.prefills
    _STATS.prefill_rows += info.prefill_rows
    _STATS.decode_rows += plan.batch * plan.num_samples
    return out
