"""The demo: the whole R1V2 recipe on a toy visual-reasoning task, on CPU, in minutes.

Stages, in the paper's order (`--stages` picks a subset, in this order):
  vision     the ViT and adapter pretrained on a probe that reads each cell's shape,
             colour and size: the stand-in for InternViT's own pretraining;
  warmstart  supervised training on synthetic reasoning traces. With the vision stage it
             stands in for the pretrained reasoning LM and vision encoder that R1V2 starts
             from (there are no pretrained weights here; nothing is downloaded);
  rm         the reward model (policy backbone + value head), Bradley-Terry on correct vs
             corrupted traces; held-out ranking accuracy;
  mpo        iterated MPO on the policy's own samples, paired by the hybrid reward (rule +
             format + the calibrated reward model);
  grpo       GRPO with the hybrid reward and the Selective Sample Buffer, and the same run
             without the buffer (`--no-ssb` runs only that one) for the paper's Table 2.
`compare_objectives` adds the paper's Table 3: MPO, DPO and SFT on the same pairs.
Every stage writes metrics to <out>/<stage>/metrics.jsonl (+ TensorBoard); the summary
table goes to <out>/summary.md and the plots to <out>/*.png.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import jax
import ml_collections

from r1v2_jax.data import synthetic
from r1v2_jax.data.image import TilingConfig
from r1v2_jax.data.prompts import PromptConfig, build_training_sequence
from r1v2_jax.data.tokenizer import build_demo_tokenizer
from r1v2_jax.models import VLMConfig, init_params
from r1v2_jax.rl.evaluate import answer_prior_accuracy, evaluate
from r1v2_jax.rl.examples import PromptExample, from_synthetic_many

STAGES = ("vision", "warmstart", "rm", "mpo", "grpo")


@dataclasses.dataclass
class DemoContext:
    cfg: ml_collections.ConfigDict
    model: VLMConfig
    tokenizer: Any
    prompt: PromptConfig
    train: list[PromptExample]
    heldout: list[PromptExample]
    train_raw: list
    score: Callable  # rule + format reward (no reward model): evaluation and defaults
    out: str
    log: Callable[[str], None]


def build_context(cfg, out: str, log: Callable[[str], None] = print) -> DemoContext:
    from r1v2_jax.rl.scoring import make_scorer

    tok = build_demo_tokenizer(synthetic.vocabulary())
    m = cfg.model.to_dict()
    if tok.vocab_size > m["text"]["vocab_size"]:
        raise ValueError(f"demo tokenizer has {tok.vocab_size} tokens, more than "
                         f"model.text.vocab_size={m['text']['vocab_size']}")
    m["image_token_id"] = tok.img_context_id
    m["text"]["eos_token_id"] = tok.eos_id
    model = VLMConfig.from_dict(m)
    prompt = PromptConfig(num_image_token=model.num_image_tokens)
    tiling = TilingConfig(image_size=model.vision.image_size, min_num=1, max_num=1,
                          use_thumbnail=False)
    d = cfg.demo
    scene_cfg = synthetic.SyntheticConfig(image_size=model.vision.image_size)
    data = synthetic.make_dataset(int(d.data_seed), int(d.num_examples),
                                  heldout_fraction=float(d.heldout_fraction), config=scene_cfg)
    heldout_raw = list(data.heldout[:int(d.num_heldout)])
    train = from_synthetic_many(data.train, tok, tiling, prompt)
    heldout = from_synthetic_many(heldout_raw, tok, tiling, prompt, uid_offset=10**6)
    rule_reward = ml_collections.ConfigDict(cfg.reward.to_dict())
    rule_reward.w_rm = 0.0  # the reward model joins per stage (stages_mpo.hybrid_scorer)
    return DemoContext(cfg, model, tok, prompt, train, heldout, list(data.train),
                       make_scorer(rule_reward), out, log)


def stage_inputs(ctx: DemoContext, params, train, heldout=None, score=None,
                 offline_pairs=()):
    """The recipes' StageInputs of a demo stage (synthetic data, the demo tokenizer)."""
    from r1v2_jax.recipes import StageInputs

    return StageInputs(ctx.model, params, ctx.tokenizer, ctx.prompt, train,
                       ctx.heldout if heldout is None else heldout, score, offline_pairs)


def warmstart_config(cfg) -> ml_collections.ConfigDict:
    """The demo recipe as an `sft` stage: cfg.warmstart's sizes, lr and seed."""
    w = cfg.warmstart
    c = ml_collections.ConfigDict(cfg.to_dict())
    c.sft = ml_collections.ConfigDict(dict(batch_size=int(w.batch_size),
                                           micro_batch_size=int(w.micro_batch_size),
                                           max_seq_len=0))
    c.optim.update(lr=float(w.lr), warmup_steps=int(w.warmup), total_steps=int(w.steps),
                   schedule="cosine")
    c.train.update(steps=int(w.steps), trainable=str(w.trainable), seed=int(w.seed),
                   eval_every=0, checkpoint_every=0, progress_bar=False)
    c.train.eval_at_start = False
    return c


def run_warmstart(ctx: DemoContext, params, stage_dir: str):
    """SFT on templated reasoning traces through the `sft` recipe; returns (params, eval
    metrics)."""
    from r1v2_jax.recipes import sft
    from r1v2_jax.train.sft import SFTExample

    cfg = ctx.cfg
    seqs = warmstart_sequences(ctx)
    over = longest_trace_tokens(seqs) - int(cfg.rollout.max_new_tokens)
    if over > 0:  # the policy would imitate responses that sampling cuts off
        ctx.log(f"warning: warm-start traces run up to {over} tokens past "
                f"rollout.max_new_tokens={int(cfg.rollout.max_new_tokens)}")
    mix = trace_mix(cfg)
    if mix.shortcut_rate > 0 or mix.embellish_rate > 0:
        traces = warmstart_traces(ctx)
        shortcuts = sum(short for _, short in traces)
        invented = "" if not mix.embellish_rate else "; {} of those name an invented shape".format(
            sum(synthetic.hallucinated(t, r.scene, r.question.text)
                for (t, short), r in zip(traces, ctx.train_raw) if not short))
        ctx.log(f"[warmstart] {shortcuts}/{len(seqs)} traces take the shortcut (guess, right "
                f"with probability {mix.shortcut_correct:g}), the rest count carefully{invented}")
    examples = [SFTExample(s.ids[:s.prompt_length], s.ids[s.prompt_length:], e.pixel_values)
                for s, e in zip(seqs, ctx.train)]
    t0 = time.time()
    stage_cfg = warmstart_config(cfg)
    result = sft.run(stage_cfg, stage_inputs(ctx, params, examples, score=ctx.score), stage_dir,
                     stage="warmstart", log=ctx.log)
    metrics = {**result.metrics, **sampled_eval_params(ctx, result.params)}
    ctx.log(f"[warmstart] {int(stage_cfg.train.steps)} steps in {time.time() - t0:.0f}s: "
            f"accuracy {metrics['eval_accuracy']:.3f}, format {metrics['eval_format_rate']:.3f}")
    return result.params, metrics


def trace_mix(cfg) -> synthetic.TraceMix:
    """cfg.warmstart.traces: the share of shortcut traces, how often they guess right, the
    share of careful traces that name an invented shape."""
    t = cfg.warmstart.traces
    return synthetic.TraceMix(float(t.shortcut_rate), float(t.shortcut_correct), int(t.seed),
                              float(t.embellish_rate))


def warmstart_traces(ctx: DemoContext) -> list[tuple[str, bool]]:
    """Each train prompt's trace under cfg.warmstart.traces: (trace, is_shortcut)."""
    mix = trace_mix(ctx.cfg)
    return [synthetic.mixed_trace(raw, i, mix) for i, raw in enumerate(ctx.train_raw)]


def warmstart_sequences(ctx: DemoContext) -> list:
    """The warm start's training sequences: each train prompt + its trace."""
    return [build_training_sequence(ctx.tokenizer, e.question, (1,), trace, ctx.prompt)
            for e, (trace, _) in zip(ctx.train, warmstart_traces(ctx))]


def longest_trace_tokens(seqs) -> int:
    """Response tokens (the stop token included) of the longest training sequence."""
    return max(len(s.ids) - s.prompt_length for s in seqs)


def tallied(score: Callable, tally: list) -> Callable:
    """`score` that also appends (took the shortcut, accuracy, hallucinated) per response to
    `tally` (hallucinated is False when the scorer reports no flag)."""
    def wrapped(examples, responses):
        out = score(examples, responses)
        flags = out.get("hallucinated", [False] * len(responses))
        tally.extend(zip(map(synthetic.is_shortcut, responses), map(float, out["accuracy"]),
                         map(bool, flags)))
        return out
    return wrapped


def behaviour_metrics(tally: list, prefix: str) -> dict[str, float]:
    """The share of responses that took the shortcut, each behaviour's accuracy, the
    hallucination rate of all responses and of the careful ones (the only ones that name
    shapes: a guess names none, so it cannot hallucinate). nan when a behaviour never
    occurs."""
    short = [a for s, a, _ in tally if s]
    careful = [(a, h) for s, a, h in tally if not s]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {f"{prefix}_shortcut_rate": len(short) / max(len(tally), 1),
            f"{prefix}_shortcut_accuracy": mean(short),
            f"{prefix}_careful_accuracy": mean([a for a, _ in careful]),
            f"{prefix}_hallucination_rate": mean([float(h) for _, _, h in tally]),
            f"{prefix}_careful_hallucination_rate": mean([float(h) for _, h in careful])}


def eval_params(ctx: DemoContext, params) -> dict[str, float]:
    tally: list = []
    out = evaluate(ctx.model, params, ctx.heldout, tokenizer=ctx.tokenizer, prompt=ctx.prompt,
                   max_new_tokens=int(ctx.cfg.rollout.max_new_tokens),
                   batch_size=int(ctx.cfg.rollout.eval_batch_size),
                   score=tallied(ctx.score, tally))
    return {**behaviour_metrics(tally, "eval"), **out}  # greedy_metrics' rates stand


def sampled_eval_params(ctx: DemoContext, params, examples=None,
                        prefix: str = "eval_sampled") -> dict[str, float]:
    """Sampled accuracy and pass@k (cfg.demo.sampled_eval) on `examples` (default: the
    first sampled_eval.prompts held-out prompts), with the behaviour metrics under
    `prefix`; {} when num_samples is 0."""
    from r1v2_jax.rl.evaluate import evaluate_sampled

    se = ctx.cfg.demo.sampled_eval
    if int(se.num_samples) == 0:
        return {}
    tally: list = []
    out = evaluate_sampled(ctx.model, params,
                           ctx.heldout[:int(se.prompts)] if examples is None else examples,
                           tokenizer=ctx.tokenizer, prompt=ctx.prompt,
                           max_new_tokens=int(ctx.cfg.rollout.max_new_tokens),
                           batch_size=int(ctx.cfg.rollout.eval_batch_size),
                           num_samples=int(se.num_samples), temperature=float(se.temperature),
                           score=tallied(ctx.score, tally))
    if prefix != "eval_sampled":
        out = {prefix + k[len("eval_sampled"):] if k.startswith("eval_sampled") else
               prefix + "_" + k[len("eval_"):]: v for k, v in out.items()}
    return {**out, **behaviour_metrics(tally, prefix)}


def seen_prompts(ctx: DemoContext) -> list[PromptExample]:
    """The training prompts of GRPO's first demo.seen_eval_steps steps: the trainer's feed
    (`train.feed.as_feed`, seeded by train.seed) replayed, so these are the prompts GRPO
    sampled and updated on first ("seen"), as opposed to the held-out ones ("unseen")."""
    from r1v2_jax.train.feed import as_feed

    n = int(ctx.cfg.demo.seen_eval_steps) * int(ctx.cfg.rollout.prompts_per_step)
    return as_feed(ctx.train, int(ctx.cfg.train.seed)).take(n) if n else []


def seen_eval_params(ctx: DemoContext, params) -> dict[str, float]:
    """Sampled accuracy (seen_sampled_accuracy, pass@k ...) on `seen_prompts`; {} when off."""
    seen = seen_prompts(ctx)
    return sampled_eval_params(ctx, params, seen, prefix="seen_sampled") if seen else {}


def run_grpo(ctx: DemoContext, params, stage_dir: str, *, ssb: bool,
             score: Callable | None = None, trainable: str | None = None,
             name: str | None = None):
    """GRPO from `params` through the `grpo` recipe; `score` defaults to the rule + format
    reward (ctx.score); `trainable` overrides cfg.train.trainable (the Table 4 arms)."""
    from r1v2_jax.recipes import grpo

    cfg = ml_collections.ConfigDict(ctx.cfg.to_dict())
    cfg.ssb.enabled = ssb
    if trainable is not None:
        cfg.train.trainable = trainable
    name = name or ("grpo" if ssb else "grpo_no_ssb")
    t0 = time.time()
    result = grpo.run(cfg, stage_inputs(ctx, params, ctx.train, score=score or ctx.score),
                      stage_dir, stage=name, log=ctx.log)
    final = result.metrics
    ctx.log(f"[{name}] {result.trainer.step} steps in {time.time() - t0:.0f}s: "
            f"accuracy {final['eval_accuracy']:.3f}, format {final['eval_format_rate']:.3f}")
    return result.params, final


def run_demo(cfg, out: str, *, stages=STAGES, with_ssb: bool = True, compare_no_ssb: bool = True,
             compare_objectives: bool = False, compare_trainable: bool = False,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    from r1v2_jax.demo import stages_mpo
    from r1v2_jax.rl.rewards import Calibration

    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    ctx = build_context(cfg, out, log)
    params = init_params(ctx.model, jax.random.key(int(cfg.train.seed)))
    log(f"demo: {len(ctx.train)} train / {len(ctx.heldout)} held-out prompts, model "
        f"{sum(x.size for x in jax.tree.leaves(params)) / 1e6:.1f}M params, stages "
        f"{', '.join(stages)}")
    results: dict[str, Any] = {"start": eval_params(ctx, params),
                               "prior": answer_prior_accuracy(ctx.train, ctx.heldout)}
    if "vision" in stages:
        from r1v2_jax.demo.stage_vision import run_vision_stage

        params, results["vision"] = run_vision_stage(ctx, params, os.path.join(out, "vision"))
    if "warmstart" in stages:
        params, results["warmstart"] = run_warmstart(ctx, params, os.path.join(out, "warmstart"))
    rm = None
    if "rm" in stages:
        rm_params, results["rm"] = stages_mpo.run_reward_model_stage(ctx, params,
                                                                     os.path.join(out, "rm"))
        r = results["rm"]
        rm = stages_mpo.serve_reward_model(ctx, rm_params, Calibration(
            r["rm_calibration_mean"], r["rm_calibration_std"], int(r["rm_calibration_count"])))
    if compare_objectives:
        results["compare"] = stages_mpo.run_objective_comparison(
            ctx, params, os.path.join(out, "compare"), rm=rm)
    if "mpo" in stages:
        params, results["mpo"] = stages_mpo.run_mpo_stage(ctx, params, os.path.join(out, "mpo"),
                                                          rm=rm)
        results["mpo"].update(sampled_eval_params(ctx, params))
        results["mpo"].update(seen_eval_params(ctx, params))
    if "grpo" in stages:
        reward = ml_collections.ConfigDict(cfg.reward.to_dict())
        score = stages_mpo.hybrid_scorer(ctx, reward, rm, stage="grpo")
        runs = ([True] if with_ssb else []) + ([False] if compare_no_ssb or not with_ssb else [])
        for ssb in runs:
            name = "grpo" if ssb else "grpo_no_ssb"
            final, results[name] = run_grpo(ctx, params, os.path.join(out, name), ssb=ssb,
                                            score=score)
            results[name].update(sampled_eval_params(ctx, final))
            results[name].update(seen_eval_params(ctx, final))
        if compare_trainable:  # the paper's Table 4: the same GRPO budget, another part
            results["trainable"] = {}
            for part in cfg.demo.trainable_parts:
                if part == str(cfg.train.trainable) and "grpo" in results:
                    results["trainable"][part] = results["grpo"]  # the main arm already is it
                    continue
                name = "grpo_" + part.replace("+", "_")
                final, r = run_grpo(ctx, params, os.path.join(out, "trainable", name), ssb=True,
                                    score=score, trainable=part, name=name)
                results["trainable"][part] = {**r, **sampled_eval_params(ctx, final)}
    results["seconds"] = time.time() - t0
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    from r1v2_jax.demo.report import write_report
    write_report(out, results, log)
    return results
