"""The shape sweep of `r1v2 bench`: each point timed against its peers in the same run.

Train points (bench_train.bench_train_step): JAX vs PyTorch transformers, and vs Tunix's
Qwen2 on text-only points; fwd + bwd + AdamW, fp32, same weights and batch, the sides'
steps alternating, median of `reps` after `warmup`. Generation points (`gen_point`): our
`generate` vs transformers `generate` vs Tunix's sampler on text-only points; same
weights, batch 8-32 rows of random prompts, temperature 0.6 / top-p 0.95, exactly
`new_tokens` tokens per row (no stop), KV cache on every side; the runs alternate,
tokens/s = rows * new_tokens / the median run time after a warm-up run.

Acceptance (issue 20): train >= 1.3x PyTorch and >= 1.1x Tunix; generation >= 3x
transformers and >= 1.0x Tunix.
"""

from __future__ import annotations

import dataclasses
import statistics

import numpy as np

from r1v2_jax.tools.bench_shapes import GenShape, TrainShape

TARGETS = {("train", "torch"): 1.3, ("train", "tunix"): 1.1,
           ("gen", "torch"): 3.0, ("gen", "tunix"): 1.0}


def train_point(shape: TrainShape, *, warmup: int = 1, reps: int = 3,
                remat_policy: str | None = None, tunix: bool | None = None,
                torch_threads: int | None = None) -> dict:
    """tunix: None = when the point is text only and Tunix is installed."""
    from r1v2_jax.tools.bench_train import DEFAULT_REMAT, bench_train_step

    if tunix is None:
        tunix = shape.tiles == 0 and tunix_available()
    r = bench_train_step(spec=shape.model, batch=shape.batch, seq_len=shape.seq_len,
                         tiles=shape.tiles, warmup=warmup, iters=reps, tunix=tunix,
                         remat_policy=remat_policy or DEFAULT_REMAT, torch_threads=torch_threads)
    return {"name": shape.name, **r}


def gen_point(shape: GenShape, *, warmup: int = 1, reps: int = 3, seed: int = 0,
              temperature: float = 0.6, top_p: float = 0.95, tunix: bool | None = None,
              torch_threads: int | None = None) -> dict:
    import time

    import jax
    import torch

    from r1v2_jax.generate.api import generate
    from r1v2_jax.generate.bench import twin_models
    from r1v2_jax.tools.bench_train import interleaved_times

    if tunix is None:
        tunix = shape.tiles == 0 and tunix_available()
    threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads or threads)
    spec = shape.model
    torch_model, config, params = twin_models(spec, seed)
    rng = np.random.default_rng(seed)
    # Token 0 is nobody's pad here (Tunix pads with 0): prompts draw from 1..V-2.
    ids = rng.integers(1, spec.vocab_size - 1, (shape.batch, shape.prompt_len))
    pixels = None
    if shape.tiles:
        per_tile = config.num_image_tokens
        image = np.full((shape.batch, shape.tiles * per_tile), config.image_token_id)
        ids = np.concatenate([ids[:, :4], image, ids[:, 4:]], axis=1)
        pixels = rng.standard_normal((shape.batch * shape.tiles, spec.image_size,
                                      spec.image_size, 3)).astype(np.float32)
    sampling = dict(temperature=temperature, top_p=top_p)

    def ours():
        out = generate(config, params, ids, pixels, max_new_tokens=shape.new_tokens,
                       eos_token_id=(), pad_token_id=0, seed=seed, **sampling)
        jax.block_until_ready(out.tokens)

    t_ids = torch.tensor(ids)
    t_kw = {} if pixels is None else {
        "pixel_values": torch.tensor(pixels.transpose(0, 3, 1, 2))}

    def transformers():
        with torch.no_grad():
            out = torch_model.generate(input_ids=t_ids, attention_mask=torch.ones_like(t_ids),
                                       do_sample=True, max_new_tokens=shape.new_tokens,
                                       min_new_tokens=shape.new_tokens, eos_token_id=None,
                                       pad_token_id=0, use_cache=True, **t_kw, **sampling)
        if out.shape[1] - ids.shape[1] != shape.new_tokens:
            raise RuntimeError(f"transformers generated {out.shape[1] - ids.shape[1]} tokens")

    runs = {"jax": ours, "torch": transformers}
    first = {}
    start = time.perf_counter()
    ours()
    first["jax"] = time.perf_counter() - start
    if tunix:
        from r1v2_jax.tools.bench_tunix import (tunix_generate, tunix_qwen2, tunix_sampler)

        sampler = tunix_sampler(tunix_qwen2(config, params), ids.shape[1] + shape.new_tokens)
        runs["tunix"] = lambda: tunix_generate(sampler, ids, shape.new_tokens, **sampling,
                                               seed=seed)
        start = time.perf_counter()
        runs["tunix"]()
        first["tunix"] = time.perf_counter() - start
    try:
        times = interleaved_times(runs, warmup, reps)
    finally:
        torch.set_num_threads(threads)
    generated = shape.batch * shape.new_tokens
    tps = {name: generated / statistics.median(t) for name, t in times.items()}
    out = {"name": shape.name, "model": dataclasses.asdict(spec), "batch": shape.batch,
           "new_tokens": shape.new_tokens, "prompt_len": int(ids.shape[1]),
           "tiles": shape.tiles, "torch_threads": torch_threads or threads,
           "jax_tokens_per_s": tps["jax"], "torch_tokens_per_s": tps["torch"],
           "speedup": tps["jax"] / tps["torch"], "jax_first_call_s": first["jax"],
           "times": times}
    if tunix:
        out.update(tunix_tokens_per_s=tps["tunix"], tunix_speedup=tps["jax"] / tps["tunix"],
                   tunix_first_call_s=first["tunix"])
    return out


def tunix_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tunix") is not None


def run_sweep(train: tuple[TrainShape, ...], gen: tuple[GenShape, ...], *, reps: int = 3,
              warmup: int = 1, remat_policy: str | None = None, log=None,
              train_torch_threads: int | None = None, gen_torch_threads: int | None = 1) -> dict:
    """Every point in turn; returns {"train": [...], "gen": [...], "load_before": ...,
    "load_after": ...}. log(msg, row) is called after each point with its figures. Torch threads:
    None = every core; generation defaults to 1 (transformers' eager decode of a small
    model stalls with 2 threads on a shared 2-core CPU; docs/benchmarks.md)."""
    import os

    out = {"train": [], "gen": [], "load_before": os.getloadavg()}
    for shape in train:
        out["train"].append(train_point(shape, warmup=warmup, reps=reps,
                                        remat_policy=remat_policy,
                                        torch_threads=train_torch_threads))
        log and log(f"{shape.name}: done (load {os.getloadavg()[0]:.1f})", out["train"][-1])
    for shape in gen:
        out["gen"].append(gen_point(shape, warmup=warmup, reps=reps,
                                    torch_threads=gen_torch_threads))
        log and log(f"{shape.name}: done (load {os.getloadavg()[0]:.1f})", out["gen"][-1])
    out["load_after"] = os.getloadavg()
    return out


def _verdict(ratio: float | None, target: float) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.2f}x {'ok' if ratio >= target else 'BEHIND'}"


def _describe_train(r: dict) -> str:
    m = r["model"]
    return (f"E{m['hidden']} L{m['layers']} H{m['heads']}/{m['kv_heads']} "
            f"B{r['batch']}xT{r['seq_len']} tiles {r['tiles']}")


def _describe_gen(r: dict) -> str:
    m = r["model"]
    return (f"E{m['hidden_size']} L{m['num_hidden_layers']} B{r['batch']} "
            f"P{r['prompt_len']} N{r['new_tokens']} tiles {r['tiles']}")


def format_sweep(s: dict, matmul_limit: float | None = None) -> str:
    """One table per peer (PyTorch/transformers, Tunix): time or tok/s of each side, the
    ratio and its verdict against the target; train rows also give JAX's model FLOP/s as
    a fraction of the measured matmul limit."""
    lines = [f"load average before {s['load_before'][0]:.2f}, after {s['load_after'][0]:.2f}"]
    for peer, title in (("torch", "PyTorch / transformers"), ("tunix", "Tunix 0.1.7")):
        lines += ["", f"vs {title}  (train target >= {TARGETS[('train', peer)]}x, "
                  f"generation >= {TARGETS[('gen', peer)]}x)",
                  f"{'point':<11} {'shape':<36} {'ours':>10} {'peer':>10} {'ratio':>12}"
                  + ("  of matmul limit" if peer == "torch" and matmul_limit else "")]
        for r in s["train"]:
            if peer == "tunix" and "tunix_step_s" not in r:
                continue
            peer_s = r["torch_step_s"] if peer == "torch" else r["tunix_step_s"]
            ratio = r["speedup"] if peer == "torch" else r["tunix_speedup"]
            row = (f"{r['name']:<11} {_describe_train(r):<36} {r['jax_step_s'] * 1e3:>7.0f} ms"
                   f" {peer_s * 1e3:>7.0f} ms {_verdict(ratio, TARGETS[('train', peer)]):>12}")
            if peer == "torch" and matmul_limit:
                row += f"  {r['jax_flops_per_s'] / matmul_limit:.2f}"
            lines.append(row)
        for r in s["gen"]:
            if peer == "tunix" and "tunix_tokens_per_s" not in r:
                continue
            peer_tps = r["torch_tokens_per_s"] if peer == "torch" else r["tunix_tokens_per_s"]
            ratio = r["speedup"] if peer == "torch" else r["tunix_speedup"]
            lines.append(f"{r['name']:<11} {_describe_gen(r):<36} {r['jax_tokens_per_s']:>6.0f} "
                         f"t/s {peer_tps:>6.0f} t/s {_verdict(ratio, TARGETS[('gen', peer)]):>12}")
    return "\n".join(lines)
