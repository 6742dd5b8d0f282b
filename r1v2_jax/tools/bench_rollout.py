"""Rollout workload: continuous batching vs the static engine vs transformers `generate`.

A GRPO-like rollout: `prompts` prompts (text + one image tile each) x `num_samples`
samples, sampled at temperature 1 from one random transformers InternVL model converted
with `load_hf` (both sides run the very same weights). The stop lengths are long-tailed:
`num_stop_ids` token ids stop a row, so on this near-uniform random policy every step
stops with probability ~num_stop_ids / vocab and the lengths are geometric (median
ln 2 / p, the longest of 512 samples ~9x the median); the measured median / max are
reported. Throughput = generated tokens (stop tokens included) / wall time, after a
warm-up call that compiles. The KV figures are the bytes each engine allocates for its
decode caches (static: every row x (prompt + new-token bucket); continuous: the slots),
plus the shared prompt KV, and those bytes divided by the rows live on average.
transformers runs the first `hf_prompts` prompts only (its eager decode of the whole
workload takes minutes on a small CPU); its tokens/s is of that subset.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time

import numpy as np

from r1v2_jax.generate.bench import BenchModel, build_torch_model


@dataclasses.dataclass(frozen=True)
class RolloutWorkload:
    prompts: int = 64
    num_samples: int = 8
    prompt_text_tokens: int = 24  # + one tile's image tokens
    max_new_tokens: int = 512
    num_stop_ids: int = 96  # of a 4096 vocabulary: p(stop) ~ 2.3% per step, median ~30
    slots: int = 64
    hf_prompts: int = 4
    seed: int = 0


def _prompts(w: RolloutWorkload, model: BenchModel, image_id: int, tokens_per_tile: int):
    rng = np.random.default_rng(w.seed)
    text = rng.integers(0, model.vocab_size - 1 - w.num_stop_ids,
                        (w.prompts, w.prompt_text_tokens))
    image = np.full((w.prompts, tokens_per_tile), image_id)
    ids = np.concatenate([text[:, :4], image, text[:, 4:]], axis=1)
    pixels = rng.standard_normal((w.prompts, model.image_size, model.image_size, 3))
    return ids, pixels.astype(np.float32)


def bench_rollout(w: RolloutWorkload = RolloutWorkload(), model: BenchModel = BenchModel(),
                  *, torch_threads: int | None = 1) -> dict:
    """Runs the workload on both engines (and transformers on a subset); returns figures."""
    import jax
    import torch

    from r1v2_jax.convert import load_hf
    from r1v2_jax.generate import engine_stats, generate

    threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads or threads)
    torch_model = build_torch_model(model, w.seed)
    with tempfile.TemporaryDirectory() as folder:
        torch_model.save_pretrained(folder)
        config, params = load_hf(folder)
    params = jax.device_put(params)
    # stop ids at the top of the vocabulary, below the image token (the last id)
    stops = tuple(range(model.vocab_size - 1 - w.num_stop_ids, model.vocab_size - 1))
    ids, pixels = _prompts(w, model, config.image_token_id, config.num_image_tokens)
    kw = dict(max_new_tokens=w.max_new_tokens, temperature=1.0, num_samples=w.num_samples,
              eos_token_id=stops, seed=w.seed)

    def run(slots):
        before = engine_stats()
        start = time.perf_counter()
        out = jax.block_until_ready(generate(config, params, ids, pixels, slots=slots, **kw))
        seconds = time.perf_counter() - start
        after = engine_stats()
        occupancy = ((after.live_row_steps - before.live_row_steps)
                     / (after.row_steps - before.row_steps))
        return out, seconds, occupancy

    results, outputs = {}, {}
    tc = config.text
    per_slot = 2 * tc.num_hidden_layers * tc.num_key_value_heads * tc.head_dim * \
        config.jnp_dtype.itemsize
    for name, slots in (("static", None), ("continuous", w.slots)):
        run(slots)  # compiles
        out, seconds, occupancy = run(slots)
        lengths = np.asarray(out.lengths)
        rows = slots or w.prompts * w.num_samples
        prompt_width = 16 * -(-ids.shape[1] // 16)  # the engine's default buckets
        new_width = 16
        while new_width < w.max_new_tokens:
            new_width *= 2
        kv = (rows * (prompt_width + new_width) + w.prompts * prompt_width) * per_slot
        results[name] = {"seconds": seconds, "tokens": int(lengths.sum()),
                         "tokens_per_s": float(lengths.sum()) / seconds,
                         "occupancy": occupancy, "kv_bytes": kv,
                         "kv_bytes_per_live_row": kv / (occupancy * rows)}
        outputs[name] = out
    same = all(np.array_equal(np.asarray(getattr(outputs["static"], f)),
                              np.asarray(getattr(outputs["continuous"], f)))
               for f in ("tokens", "lengths", "truncated"))
    lengths = np.asarray(outputs["static"].lengths)
    results["hf"] = _bench_hf(torch_model, ids[:w.hf_prompts], pixels[:w.hf_prompts], stops, w)
    torch.set_num_threads(threads)
    return {"workload": dataclasses.asdict(w), "model": dataclasses.asdict(model),
            "device": jax.devices()[0].device_kind, "torch_threads": torch_threads,
            "length_median": float(np.median(lengths)), "length_max": int(lengths.max()),
            "length_mean": float(lengths.mean()),
            "truncated_rate": float(np.mean(np.asarray(outputs["static"].truncated))),
            "same_tokens": same, **results,
            "speedup_vs_static": results["continuous"]["tokens_per_s"]
            / results["static"]["tokens_per_s"],
            "speedup_vs_hf": results["continuous"]["tokens_per_s"] / results["hf"]["tokens_per_s"]}


def _bench_hf(torch_model, ids, pixels, stops, w: RolloutWorkload) -> dict:
    """transformers `generate` of the same sampling on a subset of the prompts."""
    import torch

    input_ids = torch.tensor(ids)
    kw = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
              pixel_values=torch.tensor(pixels.transpose(0, 3, 1, 2)), do_sample=True,
              temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=w.max_new_tokens,
              num_return_sequences=w.num_samples, eos_token_id=list(stops), pad_token_id=0)
    with torch.no_grad():
        start = time.perf_counter()
        out = torch_model.generate(**kw)[:, ids.shape[1]:].numpy()
        seconds = time.perf_counter() - start
    stop = np.isin(out, stops)
    ends = np.where(stop.any(1), stop.argmax(1) + 1, out.shape[1])  # stop token included
    return {"prompts": len(ids), "seconds": seconds, "tokens": int(ends.sum()),
            "tokens_per_s": float(ends.sum()) / seconds}


def format_rollout(r: dict) -> str:
    w, s, c, h = r["workload"], r["static"], r["continuous"], r["hf"]
    mb = lambda x: f"{x / 1e6:.1f} MB"
    return "\n".join([
        f"rollout workload: {w['prompts']} prompts (1 tile each) x {w['num_samples']} samples, "
        f"<= {w['max_new_tokens']} new tokens; stop lengths median {r['length_median']:.0f}, "
        f"mean {r['length_mean']:.1f}, max {r['length_max']} "
        f"({r['length_max'] / r['length_median']:.1f}x the median)",
        f"  static engine      {s['tokens_per_s']:8.0f} tok/s ({s['seconds']:.1f} s), occupancy "
        f"{s['occupancy']:.2f}, KV {mb(s['kv_bytes'])} = {mb(s['kv_bytes_per_live_row'])}/live row",
        f"  continuous ({w['slots']} slots) {c['tokens_per_s']:8.0f} tok/s ({c['seconds']:.1f} s), "
        f"occupancy {c['occupancy']:.2f}, KV {mb(c['kv_bytes'])} = "
        f"{mb(c['kv_bytes_per_live_row'])}/live row",
        f"  transformers       {h['tokens_per_s']:8.0f} tok/s ({h['prompts']} prompts, "
        f"{h['seconds']:.1f} s)",
        f"  continuous vs static {r['speedup_vs_static']:.2f}x (target >= 2x: "
        f"{'met' if r['speedup_vs_static'] >= 2 else 'NOT met'}), vs transformers "
        f"{r['speedup_vs_hf']:.1f}x; same tokens as static: {r['same_tokens']}"])
