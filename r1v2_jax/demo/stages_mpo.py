"""The demo's reward-model and MPO stages (R1V2 stage 2), on the synthetic shapes task.

  run_reward_model_stage  trains r_theta (policy backbone + value head) Bradley-Terry on
      (correct trace, corrupted trace) pairs, where the corruption is a wrong answer, an
      object absent from the image, or both; reports held-out ranking accuracy.
  run_mpo_stage  iterated MPO (or DPO / SFT on the same pipeline) on pairs built from the
      policy's own samples, scored by the hybrid reward (+ the reward model if given).
"""

from __future__ import annotations

import dataclasses
import os
import time

import ml_collections
import numpy as np

from r1v2_jax.data import synthetic
from r1v2_jax.data.prompts import completion_of
from r1v2_jax.demo.pipeline import DemoContext
from r1v2_jax.rl.examples import PromptExample
from r1v2_jax.rl.pairs import PreferencePair, pair_seq_len
from r1v2_jax.rl.rewards import Calibration, calibrate
from r1v2_jax.rl.rm_trainer import JaxRewardModelScorer
from r1v2_jax.train.metrics import MetricsWriter

CORRUPTIONS = ("answer", "hallucination", "misdescribe", "shortcut", "both")
STAGE_NAMES = {"mpo": "mpo", "dpo": "dpo", "sft": "sft_pairs"}  # keys of demo/report.py ROWS


# ----------------------------------------------------------------------------- pairs
wrong_answer = synthetic.wrong_answer  # the corruption "answer" (moved to data/synthetic.py)


def misdescribed_scene(scene: synthetic.Scene, question_text: str,
                       rng: np.random.Generator) -> synthetic.Scene:
    """The scene with one shape's size, colour or kind changed so that `synthetic.hallucinated`
    flags its description: the policy's own hallucinations look like this (a present shape
    named wrongly), not like an extra shape, so the reward model must learn both."""
    options = []
    for i, shape in enumerate(scene.shapes):
        for size in synthetic.SIZES:
            for color in synthetic.COLORS:
                for kind in synthetic.KINDS:
                    changed = dataclasses.replace(shape, size=size, color=color, kind=kind)
                    fake = dataclasses.replace(
                        scene, shapes=scene.shapes[:i] + (changed,) + scene.shapes[i + 1:])
                    if synthetic.hallucinated(synthetic.describe(fake), scene, question_text):
                        options.append(fake)
    if not options:
        raise ValueError(f"no shape can be misdescribed in scene {scene.signature()} for "
                         f"question {question_text!r}")
    return options[int(rng.integers(len(options)))]


def corrupted_trace(scene: synthetic.Scene, question: synthetic.Question, kind: str,
                    rng: np.random.Generator) -> str:
    """The correct trace with a wrong final answer ("answer": the boxed answer contradicts
    the reasoning), an invented object in the description ("hallucination"), a present
    object described wrongly ("misdescribe"), or a wrong answer and an invented object
    ("both"); or the shortcut, a guess of the right answer without reasoning ("shortcut":
    the warm start's worse behaviour, which a reward model that never saw it scores high)."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"rm.corruptions: unknown corruption {kind!r}; known: {CORRUPTIONS}")
    if kind == "shortcut":
        return synthetic.shortcut_trace(question.answer)
    trace = synthetic.reasoning_trace(scene, question)
    if kind in ("answer", "both"):
        boxed = f"\\boxed{{{question.answer}}}"
        trace = trace.replace(boxed, f"\\boxed{{{wrong_answer(question, rng)}}}")
    if kind in ("hallucination", "both"):
        invented = synthetic.absent_shape(scene, question.text, rng)
        fake = dataclasses.replace(scene, shapes=scene.shapes + (invented,))
        trace = trace.replace(synthetic.describe(scene), synthetic.describe(fake), 1)
    if kind == "misdescribe":
        fake = misdescribed_scene(scene, question.text, rng)
        trace = trace.replace(synthetic.describe(scene), synthetic.describe(fake), 1)
    return trace


def synthetic_rm_pairs(ctx: DemoContext, examples: list[PromptExample], raw: list, *,
                       corruptions, seed: int) -> tuple[list[PreferencePair], list[str]]:
    """One pair per example: chosen = the correct trace, rejected = a corrupted one (kind
    drawn uniformly from `corruptions`). Returns (pairs, kind of each pair)."""
    rng = np.random.default_rng(seed)
    tok, eos = ctx.tokenizer, ctx.tokenizer.eos_id

    def ids(response: str) -> np.ndarray:
        return np.asarray(tok.encode(completion_of(response, ctx.prompt)) + [eos], np.int32)

    pairs, kinds = [], []
    for ex, r in zip(examples, raw):
        kind = str(corruptions[int(rng.integers(len(corruptions)))])
        chosen = synthetic.reasoning_trace(r.scene, r.question)
        rejected = corrupted_trace(r.scene, r.question, kind, rng)
        pairs.append(PreferencePair(ex, ids(chosen), ids(rejected), 1.0, 0.0, False,
                                    synthetic.hallucinated(rejected, r.scene, r.question.text)))
        kinds.append(kind)
    return pairs, kinds


def heldout_raw(ctx: DemoContext) -> list:
    """The raw held-out examples behind ctx.heldout (the dataset is regenerated from its seed)."""
    d = ctx.cfg.demo
    scenes = synthetic.SyntheticConfig(image_size=ctx.model.vision.image_size)
    data = synthetic.make_dataset(int(d.data_seed), int(d.num_examples),
                                  heldout_fraction=float(d.heldout_fraction), config=scenes)
    return list(data.heldout[:len(ctx.heldout)])


# ----------------------------------------------------------------------------- stages
def rm_scorer(ctx: DemoContext, rm_params,
              pairs: tuple[PreferencePair, ...] = ()) -> JaxRewardModelScorer:
    """Scorer whose rows fit any policy sample (prompt + max_new_tokens + eos) and `pairs`."""
    rm = ctx.cfg.rm
    longest = max(len(e.prompt_ids) for e in ctx.train + ctx.heldout)
    seq_len = int(rm.max_seq_len) or max(
        -(-(longest + int(ctx.cfg.rollout.max_new_tokens) + 1) // 16) * 16,
        pair_seq_len(pairs) if pairs else 0)
    return JaxRewardModelScorer(ctx.model, rm_params, tokenizer=ctx.tokenizer, prompt=ctx.prompt,
                                batch_size=int(rm.score_batch_size), seq_len=seq_len,
                                max_tiles=int(rm.max_tiles))


def calibration_of(scorer: JaxRewardModelScorer, pairs: list[PreferencePair]) -> Calibration:
    """(mean, std) of the RM's scores over both sides of `pairs`."""
    chosen, rejected = scorer.score_pairs(pairs)
    return calibrate(np.concatenate([chosen, rejected]))


def rm_stage_config(cfg) -> ml_collections.ConfigDict:
    """The demo recipe as an `rm` stage: cfg.rm's steps, lr, schedule, trainable, seed."""
    rm = cfg.rm
    c = ml_collections.ConfigDict(cfg.to_dict())
    c.optim.update(lr=float(rm.lr), warmup_steps=int(rm.warmup), total_steps=int(rm.steps),
                   schedule=str(rm.schedule))
    c.train.update(steps=int(rm.steps), trainable=str(rm.trainable), seed=int(rm.seed),
                   eval_every=0, checkpoint_every=0, progress_bar=False)
    c.train.eval_at_start = False
    return c


def run_reward_model_stage(ctx: DemoContext, params, stage_dir: str):
    """Trains the reward model from the policy `params` through the `rm` recipe; returns
    (rm_params, metrics) with metrics: rm_heldout_pair_accuracy (+ per corruption kind),
    rm_train_*, rm_calibration_* (pass `Calibration(mean, std, count)` of these to
    `serve_reward_model`)."""
    from r1v2_jax.demo.pipeline import stage_inputs
    from r1v2_jax.recipes import reward_model

    rm = ctx.cfg.rm
    t0 = time.time()
    n, kinds = int(rm.num_train_pairs), tuple(rm.corruptions)
    train_pairs, _ = synthetic_rm_pairs(ctx, ctx.train[:n], ctx.train_raw[:n],
                                        corruptions=kinds, seed=int(rm.seed))
    held_pairs, held_kinds = synthetic_rm_pairs(ctx, ctx.heldout, heldout_raw(ctx),
                                                corruptions=kinds, seed=int(rm.seed) + 1)
    result = reward_model.run(rm_stage_config(ctx.cfg),
                              stage_inputs(ctx, params, train_pairs, heldout=held_pairs),
                              stage_dir, log=ctx.log)
    rm_params = result.params
    scorer = rm_scorer(ctx, rm_params, tuple(train_pairs + held_pairs))
    chosen, rejected = scorer.score_pairs(held_pairs)
    right = chosen > rejected
    metrics = {"rm_heldout_pair_accuracy": float(np.mean(right)),
               "rm_heldout_margin": float(np.mean(chosen - rejected))}
    for kind in sorted(set(held_kinds)):
        sel = np.asarray([k == kind for k in held_kinds])
        metrics[f"rm_heldout_accuracy_{kind}"] = float(np.mean(right[sel]))
    metrics.update({k if k.startswith("rm_") else f"rm_{k}": v
                    for k, v in result.metrics.items()}, seconds=time.time() - t0)
    writer = MetricsWriter(stage_dir, resume_step=int(rm.steps))  # after the trainer's lines
    writer.write({"step": int(rm.steps), "stage": "rm", **metrics})
    writer.close()
    per_kind = ", ".join(f"{k}: {metrics[f'rm_heldout_accuracy_{k}']:.2f}"
                         for k in sorted(set(held_kinds)))
    ctx.log(f"[rm] {int(rm.steps)} steps in {time.time() - t0:.0f}s: held-out pair accuracy "
            f"{metrics['rm_heldout_pair_accuracy']:.3f} ({per_kind})")
    return rm_params, metrics


@dataclasses.dataclass(frozen=True)
class RewardModelServing:
    """A trained reward model ready for the hybrid reward: its scorer and calibration."""

    scorer: JaxRewardModelScorer
    calibration: Calibration


def serve_reward_model(ctx: DemoContext, rm_params,
                       calibration: Calibration | None = None) -> RewardModelServing:
    """Builds the RM scorer once for every later stage. Its rows fit any policy sample and
    the RM stage's calibration pairs (same seed), on which the calibration is recomputed
    unless given."""
    n = int(ctx.cfg.rm.num_calibration)
    pairs, _ = synthetic_rm_pairs(ctx, ctx.train[:n], ctx.train_raw[:n],
                                  corruptions=tuple(ctx.cfg.rm.corruptions),
                                  seed=int(ctx.cfg.rm.seed))
    scorer = rm_scorer(ctx, rm_params, tuple(pairs))
    return RewardModelServing(scorer, calibration or calibration_of(scorer, pairs))


def hybrid_scorer(ctx: DemoContext, reward_cfg, rm: RewardModelServing | None = None, *,
                  stage: str):
    """The batch scorer of `reward_cfg` (rule + format, plus the calibrated reward model when
    `rm` is given and reward.w_rm != 0). Without a reward model, w_rm is set to 0 in
    `reward_cfg` (logged)."""
    from r1v2_jax.rl.scoring import make_scorer

    if rm is None or float(reward_cfg.w_rm) == 0.0:
        if float(reward_cfg.w_rm) != 0.0:
            ctx.log(f"[{stage}] no reward model given: reward.w_rm {reward_cfg.w_rm} -> 0")
            reward_cfg.w_rm = 0.0
        return ctx.score
    return make_scorer(reward_cfg, reward_model=rm.scorer, calibration=rm.calibration,
                       log=ctx.log)


def _run_mpo_recipe(ctx: DemoContext, cfg, params, stage_dir: str, name: str, score,
                    offline_pairs=()):
    """The `mpo` recipe on the demo's prompts; returns (params, final eval metrics)."""
    from r1v2_jax.demo.pipeline import stage_inputs
    from r1v2_jax.recipes import mpo

    t0 = time.time()
    result = mpo.run(cfg, stage_inputs(ctx, params, ctx.train, score=score,
                                       offline_pairs=offline_pairs), stage_dir, stage=name,
                     log=ctx.log)
    final = result.metrics
    ctx.log(f"[{name}] {result.trainer.step} steps in {time.time() - t0:.0f}s: accuracy "
            f"{final['eval_accuracy']:.3f}, format {final['eval_format_rate']:.3f}, "
            f"hallucination {final['eval_hallucination_rate']:.3f}")
    return result.params, final


def run_mpo_stage(ctx: DemoContext, params, stage_dir: str, *, loss: str = "mpo",
                  rm: RewardModelServing | None = None):
    """Iterated MPO (loss "mpo"), or DPO / SFT on the same pipeline ("dpo" / "sft"), from
    `params`. rm (`serve_reward_model`) scores samples in the hybrid reward with weight
    mpo.reward.w_rm. Returns (params, eval metrics of the final
    policy)."""
    from r1v2_jax.rl.mpo_trainer import stage_config

    if loss not in STAGE_NAMES:
        raise ValueError(f"run_mpo_stage: loss must be one of {sorted(STAGE_NAMES)}, "
                         f"got {loss!r}")
    name = STAGE_NAMES[loss]
    cfg = stage_config(ctx.cfg, "mpo")
    cfg.mpo.loss = loss
    score = hybrid_scorer(ctx, cfg.reward, rm, stage=name)
    penalty = float(ctx.cfg.demo.mpo_hallucination_penalty)
    if penalty:
        ctx.log(f"[{name}] control: scores minus {penalty:g} x the known hallucination flag")
        score = penalize_hallucination(score, penalty)
    return _run_mpo_recipe(ctx, cfg, params, stage_dir, name, score)


def penalize_hallucination(score, penalty: float):
    """`score` whose rewards drop by `penalty` for each response that names a shape absent
    from its image (`synthetic.hallucinated`, known for synthetic scenes): the control that
    shows what MPO does when its pairs see hallucination perfectly."""
    def scored(examples, responses):
        out = dict(score(examples, responses))
        out["reward"] = (np.asarray(out["reward"], np.float64)
                         - penalty * np.asarray(out["hallucinated"], np.float64))
        return out
    return scored


def run_objective_comparison(ctx: DemoContext, params, out_dir: str, *,
                             rm: RewardModelServing | None = None) -> dict:
    """The paper's Table 3 at toy scale: MPO, DPO and SFT trained from `params` on the same
    fixed pairs (one sampling pass of `demo.compare_prompts` prompts with `params`, scored
    like the MPO stage), same steps, optimizer and seed. Returns {loss: eval metrics} plus
    "pairs": how many pairs the set holds."""
    from r1v2_jax.rl.mpo_trainer import stage_config
    from r1v2_jax.rl.pairs import hybrid_reward_range, sample_pairs
    from r1v2_jax.rl.rollout import SamplingOptions

    base = stage_config(ctx.cfg, "mpo")
    m = base.mpo
    score = hybrid_scorer(ctx, base.reward, rm, stage="compare")
    options = SamplingOptions(int(m.num_samples), int(base.rollout.max_new_tokens),
                              float(m.temperature), float(m.top_p), int(m.top_k))
    prompts = ctx.train[:int(ctx.cfg.demo.compare_prompts)]
    score_range = (tuple(float(x) for x in m.score_range) if len(m.score_range)
                   else hybrid_reward_range(base.reward))
    pairs, stats = sample_pairs(ctx.model, params, prompts, options, tokenizer=ctx.tokenizer,
                                prompt=ctx.prompt, seed=int(base.train.seed), policy_version=0,
                                score=score, score_range=score_range, threshold=float(m.threshold),
                                scale=float(m.score_scale),
                                require_correct_chosen=bool(m.require_correct_chosen))
    if not pairs:
        raise RuntimeError(f"compare: no pair from {len(prompts)} prompts at mpo.threshold="
                           f"{m.threshold}")
    ctx.log(f"[compare] {len(pairs)} pairs from {len(prompts)} prompts; training MPO, DPO "
            f"and SFT on them")
    results: dict = {"pairs": len(pairs), "pair_stats": stats.as_dict()}
    for loss in ("mpo", "dpo", "sft"):
        cfg = ml_collections.ConfigDict(base.to_dict())
        cfg.mpo.update(loss=loss, prompts_per_round=0)
        _, results[loss] = _run_mpo_recipe(ctx, cfg, params, os.path.join(out_dir, loss),
                                           f"compare_{loss}", score, offline_pairs=pairs)
    return results
