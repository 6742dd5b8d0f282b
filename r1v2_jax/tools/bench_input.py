"""Measure the streaming input pipeline (data/pipeline/) against the eager path.

    .venv/bin/python -m r1v2_jax.tools.bench_input [--records 20000] [--dir /tmp/r1v2_bench_input]

1. Writes (once, into --dir; not committed) a parquet set of `--records` prompt records,
   each with one 800x600 JPEG (64 distinct smooth random images, cycled), row groups of 64.
2. In fresh subprocesses, host RSS (psutil, sampled every 20 ms):
   * pipeline: prevalidate all records (headers only), then iterate --pipeline-records
     records in batches of 8 with R1V2's tiling (448 px, up to 12 tiles + thumbnail:
     an 800x600 image is 13 tiles), 2 worker threads, prefetch 8; RSS after validation,
     peak while iterating, and the steady-state rate (second half);
   * eager: today's path (records.load_prompt_records + rl.examples.from_record, float32
     tiles held for every record) on the first --eager-records records, written as JSONL +
     image files; RSS per record, extrapolated linearly to --records;
   * the same pipeline with the tiny model's tiling (28 px, one tile): its rate;
   * the CPU time of decoding one record at 28 px (13 tiles) and at 448 px;
   * one CPU training step of the tiny model (configs/tiny.py; batch 8, 64 tokens, one
     uint8 tile each normalised inside the jitted step; AdamW): median time;
   * training (`--train-steps`): the `sft` trainer (or `--train-stage grpo`: 8 prompts x
     4 samples of 16 tokens) on the tiny model (dynamic tiling at 28 px: an 800x600 image
     is 12 tiles + thumbnail, as at R1V2's 448 px) streaming the same images
     (`recipes.inputs.stream_feed`, the path of `r1v2 train`), against the same trainer
     on 64 of those examples held in memory: RSS while training and the median step
     time of each (equal times: the input keeps up).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

TILE_BATCH = 8


def write_set(path: str, n: int, sft: bool = False) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for _ in range(64):  # smooth random images: realistic JPEG sizes (tens of kB)
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(small).resize((800, 600), Image.Resampling.BICUBIC).save(buf, "JPEG",
                                                                                 quality=90)
        images.append(buf.getvalue())
    schema = pa.schema([("images", pa.list_(pa.binary())), ("question", pa.string()),
                        ("answer", pa.string()), ("answer_type", pa.string())]
                       + ([("response", pa.string())] if sft else []))
    tmp = path + ".tmp"
    with pq.ParquetWriter(tmp, schema) as w:
        for start in range(0, n, 64):
            rows = [{"images": [images[i % 64]], "question": f"How many shapes are there? {i}",
                     "answer": str(i % 10), "answer_type": "number",
                     **({"response": f"<think>\nI count {i % 10} shapes.\n</think>\n"
                                     f"\\boxed{{{i % 10}}}"} if sft else {})}
                    for i in range(start, min(n, start + 64))]
            w.write_table(pa.Table.from_pylist(rows, schema=schema), row_group_size=64)
    os.replace(tmp, path)


class RSS:
    def __init__(self):
        import psutil

        self.proc, self.peak, self._stop = psutil.Process(), 0, False
        threading.Thread(target=self._run, daemon=True).start()

    def now(self) -> float:
        return self.proc.memory_info().rss / 2**20

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, self.now())
            time.sleep(0.02)

    def reset_peak(self):
        self.peak = self.now()


def _rules(tiny: bool):
    from r1v2_jax.data import synthetic
    from r1v2_jax.data.image import TilingConfig
    from r1v2_jax.data.prompts import PromptConfig
    from r1v2_jax.data.records import RecordRules
    from r1v2_jax.data.tokenizer import build_demo_tokenizer

    tiling = TilingConfig(image_size=28, max_num=1, use_thumbnail=False) if tiny else TilingConfig()
    prompt = PromptConfig(num_image_token=1 if tiny else 256)
    return (RecordRules(tiling=tiling, prompt=prompt, decode_images=False),
            build_demo_tokenizer(synthetic.vocabulary()), prompt)


def phase_pipeline(args) -> dict:
    from r1v2_jax.data.pipeline import InputPipeline, PipelineConfig, open_source

    rss = RSS()
    rules, tok, prompt = _rules(args.tiny)
    base = rss.now()
    t0 = time.perf_counter()
    pipe = InputPipeline(open_source(args.data), "prompt", rules, tok, prompt,
                         PipelineConfig(batch_size=TILE_BATCH, seed=0, num_threads=2,
                                        prefetch_buffer_size=8))
    validate_s = time.perf_counter() - t0
    after_validate = rss.now()
    it = pipe.batches()
    rss.reset_peak()
    n_batches = args.pipeline_records // TILE_BATCH
    times, samples = [], []
    for b in range(n_batches):
        batch = next(it)
        times.append(time.perf_counter())
        if b % 10 == 0:
            samples.append(round(rss.now()))
    half = n_batches // 2
    rate = (n_batches - half - 1) * TILE_BATCH / (times[-1] - times[half])
    return {"phase": "pipeline_tiny" if args.tiny else "pipeline",
            "records_validated": int(len(pipe.validated.indices)),
            "validate_s": round(validate_s, 1), "rss_start_mib": round(base),
            "rss_after_validate_mib": round(after_validate),
            "rss_peak_iterating_mib": round(rss.peak), "rss_every_10_batches_mib": samples,
            "tiles_per_record": int(len(batch[0].tiles)), "tile_dtype": str(batch[0].tiles.dtype),
            "records_per_s": round(rate, 1), "records_iterated": n_batches * TILE_BATCH}


def phase_eager(args) -> dict:
    import pyarrow.parquet as pq

    from r1v2_jax.data.records import load_prompt_records
    from r1v2_jax.rl.examples import from_record

    rss = RSS()
    rules, tok, prompt = _rules(False)
    folder = os.path.join(os.path.dirname(args.data), "eager")
    os.makedirs(os.path.join(folder, "img"), exist_ok=True)
    rows = pq.ParquetFile(args.data).read_row_group(0).to_pylist()
    rows = (rows * (args.eager_records // len(rows) + 1))[:args.eager_records]
    with open(os.path.join(folder, "d.jsonl"), "w") as f:
        for i, r in enumerate(rows):
            name = f"img/{i}.jpg"
            with open(os.path.join(folder, name), "wb") as g:
                g.write(r["images"][0])
            f.write(json.dumps({**r, "images": [name]}) + "\n")
    base = rss.now()
    t0 = time.perf_counter()
    records = load_prompt_records(os.path.join(folder, "d.jsonl"), rules, tok).records
    examples = [from_record(i, r, tok, rules.tiling, prompt) for i, r in enumerate(records)]
    seconds = time.perf_counter() - t0
    after = rss.now()
    per = (after - base) / len(examples)
    return {"phase": "eager", "records": len(examples), "rss_start_mib": round(base),
            "rss_after_mib": round(after), "mib_per_record": round(per, 1),
            "tile_bytes_per_record_mib": round(examples[0].pixel_values.nbytes / 2**20, 1),
            "extrapolated_gib_for_set": round(per * args.records / 1024, 1),
            "records_per_s_one_thread": round(len(examples) / seconds, 1)}


def phase_train_step(args) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    from r1v2_jax.data.image import TilingConfig
    from r1v2_jax.data.pipeline import normalize_tiles
    from r1v2_jax.models import VLMConfig, init_params
    from r1v2_jax.train.config_loader import load_config_file
    from r1v2_jax.train.steps import sequence_token_logps

    config = VLMConfig.from_dict(load_config_file("configs/tiny.py").model)
    tiling = TilingConfig(image_size=28, max_num=1, use_thumbnail=False)
    params = init_params(config, jax.random.key(0))
    opt = optax.adamw(1e-3)
    state = opt.init(params)
    n_img = config.num_image_tokens
    ids = np.array(jax.random.randint(jax.random.key(1), (TILE_BATCH, 64), 6, 128))
    ids[:, 1:1 + n_img] = config.image_token_id
    tiles = np.random.default_rng(0).integers(0, 256, (TILE_BATCH, 28, 28, 3), np.uint8)
    mask = np.ones_like(ids)

    @jax.jit
    def step(params, state, ids, mask, tiles):
        def loss_fn(p):
            px = normalize_tiles(tiles, tiling, xp=jnp)
            return -sequence_token_logps(config, p, ids, mask, px)[:, n_img + 1:].mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    for _ in range(3):
        params, state, loss = step(params, state, ids, mask, tiles)
    jax.block_until_ready(loss)
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        params, state, loss = step(params, state, ids, mask, tiles)
        jax.block_until_ready(loss)
        times.append(time.perf_counter() - t0)
    ms = float(np.median(times)) * 1e3
    return {"phase": "tiny_train_step", "batch": TILE_BATCH, "step_ms": round(ms, 2),
            "records_per_s_needed": round(TILE_BATCH / ms * 1e3, 1)}


def _train_setup(args):
    """(model config, tokenizer, recipe config, params) of the training phases."""
    import jax

    from r1v2_jax.data import synthetic
    from r1v2_jax.data.tokenizer import build_demo_tokenizer
    from r1v2_jax.models import VLMConfig, init_params
    from r1v2_jax.train.config_loader import load_config_file

    tok = build_demo_tokenizer(synthetic.vocabulary())
    spec = load_config_file("configs/tiny.py").model
    spec.text.vocab_size = 160  # the demo tokenizer's ids
    model = VLMConfig.from_dict(spec).replace(max_dynamic_patch=12, use_thumbnail=True,
                                              dynamic_image_size=True,
                                              image_token_id=tok.img_context_id)
    cfg = load_config_file(f"configs/{args.train_stage}_38b.py:smoke")
    cfg.data.update(num_threads=args.threads, prefetch=16, max_prompt_tokens=512)
    cfg.train.update(steps=args.train_steps, checkpoint_every=10**6, eval_every=0,
                     eval_at_start=False)
    if args.train_stage == "sft":
        cfg.sft.update(batch_size=TILE_BATCH, micro_batch_size=TILE_BATCH)
    else:  # TILE_BATCH prompts x 4 samples of 16 new tokens, rule rewards only
        cfg.rollout.update(prompts_per_step=TILE_BATCH, num_generations=4, max_new_tokens=16)
        cfg.grpo.update(micro_batch_size=TILE_BATCH * 4)
        cfg.reward.update(w_rm=0.0)
    return model, tok, cfg, init_params(model, jax.random.key(0))


def _trainer(args, cfg, model, params, tok, prompt, train, work):
    if args.train_stage == "sft":
        from r1v2_jax.train.sft import SFTTrainer
        return SFTTrainer(cfg, model, params, train=train, pad_id=tok.pad_id, workdir=work,
                          log=lambda m: None)
    from r1v2_jax.rl.grpo_trainer import GRPOTrainer
    from r1v2_jax.rl.scoring import make_scorer
    return GRPOTrainer(cfg, model, params, tokenizer=tok, prompt=prompt, train=train,
                       heldout=[], score=make_scorer(cfg.reward), workdir=work,
                       log=lambda m: None)


def phase_train(args) -> dict:
    import tempfile

    import jax

    from r1v2_jax.recipes import inputs
    from r1v2_jax.train.feed import ListFeed

    rss = RSS()
    model, tok, cfg, params = _train_setup(args)
    prompt = inputs.prompt_config(model, tok, cfg)
    base = rss.now()
    t0 = time.perf_counter()
    kind = "sft" if args.train_stage == "sft" else "prompt"
    feed = inputs.stream_feed(cfg, model, tok, prompt, args.data, kind, log=lambda m: None)
    validate_s = time.perf_counter() - t0
    after_validate = rss.now()
    memory = ListFeed(feed.first(64), 0, limits=feed.limits)  # the same shapes
    per_step = TILE_BATCH
    out = {"phase": "train", "stage": args.train_stage, "records": len(feed),
           "validate_s": round(validate_s, 1), "tiles_per_record": feed.limits.tiles,
           "threads": args.threads, "rss_start_mib": round(base),
           "rss_after_validate_mib": round(after_validate)}
    for name, train in (("in_memory", memory), ("streamed", feed)):
        times, samples = [], []
        with tempfile.TemporaryDirectory() as work:
            trainer = _trainer(args, cfg, model, params, tok, prompt, train, work)
            rss.reset_peak()
            for step in range(args.train_steps):
                t = time.perf_counter()
                trainer.train_step()
                jax.block_until_ready(trainer.trainable)
                times.append(time.perf_counter() - t)
                if step % 20 == 0:
                    samples.append(round(rss.now()))
        steady = times[len(times) // 4:]  # after compilation and the prefetch warm-up
        out[name] = {"step_ms": round(float(np.median(steady)) * 1e3, 1),
                     "records_per_s": round(per_step / float(np.median(steady)), 1),
                     "rss_peak_mib": round(rss.peak), "rss_every_20_steps_mib": samples}
    out["streamed_over_in_memory_step"] = round(out["streamed"]["step_ms"]
                                                / out["in_memory"]["step_ms"], 2)
    return out


def phase_decode_cpu(args) -> dict:
    """CPU time (this thread's, so independent of the machine's load) of reading and
    decoding one record, at 28 px with 13 tiles and at R1V2's 448 px: three disjoint sets
    of 40 records each."""
    import dataclasses

    from r1v2_jax.data.image import TilingConfig
    from r1v2_jax.data.pipeline import InputPipeline, PipelineConfig, open_source

    out = {"phase": "decode_cpu"}
    for name, tiling in (("28px_13_tiles", TilingConfig(image_size=28, max_num=12)),
                         ("448px_13_tiles", TilingConfig())):
        rules, tok, prompt = _rules(True)
        rules = dataclasses.replace(rules, tiling=tiling)
        pipe = InputPipeline(open_source(args.data), "prompt", rules, tok, prompt,
                             PipelineConfig(batch_size=1))
        pipe._decode(0)  # warm-up
        per_record = []
        for rep in range(3):
            start = time.thread_time()
            for i in range(1000 + 300 * rep, 1040 + 300 * rep):
                pipe._decode(i)
            per_record.append(round((time.thread_time() - start) / 40 * 1e3, 2))
        out[f"{name}_cpu_ms_per_record"] = per_record
    return out


PHASES = {"pipeline": phase_pipeline, "decode_cpu": phase_decode_cpu, "eager": phase_eager, "train_step": phase_train_step,
          "train": phase_train}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=20000)
    p.add_argument("--dir", default="/tmp/r1v2_bench_input")
    p.add_argument("--pipeline-records", type=int, default=800)
    p.add_argument("--eager-records", type=int, default=40)
    p.add_argument("--train-steps", type=int, default=0,
                   help="also measure the sft trainer streaming the set (0 = skip)")
    p.add_argument("--threads", type=int, default=2, help="pipeline worker threads (train)")
    p.add_argument("--train-stage", choices=["sft", "grpo"], default="sft",
                   help="the trainer of the training phase")
    p.add_argument("--only-train", action="store_true", help="measure training only")
    p.add_argument("--phase", choices=sorted(PHASES), default=None, help=argparse.SUPPRESS)
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase:
        print(json.dumps(PHASES[args.phase](args)), flush=True)
        return 0
    os.makedirs(args.dir, exist_ok=True)
    data = os.path.join(args.dir, f"set_{args.records}.parquet")
    if not os.path.exists(data):
        t0 = time.perf_counter()
        write_set(data, args.records)
        print(f"wrote {data} ({os.path.getsize(data) / 2**20:.0f} MiB) in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    common = [sys.executable, "-m", "r1v2_jax.tools.bench_input", "--records",
              str(args.records), "--pipeline-records", str(args.pipeline_records),
              "--eager-records", str(args.eager_records), "--train-steps",
              str(args.train_steps), "--threads", str(args.threads), "--train-stage",
              args.train_stage]
    phases = [] if args.only_train else [["--phase", "pipeline"],
                                         ["--phase", "pipeline", "--tiny"],
                                         ["--phase", "eager"], ["--phase", "train_step"],
                                         ["--phase", "decode_cpu"]]
    if args.train_steps and args.train_stage == "sft":
        sft_data = os.path.join(args.dir, f"sft_{args.records}.parquet")
        if not os.path.exists(sft_data):
            write_set(sft_data, args.records, sft=True)
        phases.append(["--phase", "train", "--data", sft_data])
    elif args.train_steps:
        phases.append(["--phase", "train"])
    for extra in phases:
        extra = extra if "--data" in extra else extra + ["--data", data]
        out = subprocess.run(common + extra, check=True, capture_output=True, text=True)
        print(out.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
