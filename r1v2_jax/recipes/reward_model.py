"""Stage `rm`: the reward model r_theta (the policy backbone + a scalar value head),
Bradley-Terry on preference records, with held-out ranking accuracy. Ends by calibrating it
(mean/std of its scores on `rm.num_calibration` training pairs, both sides) and writing
WORKDIR/final/ with the value head and calibration.json: the folder GRPO and MPO name with
`--config.reward.rm_checkpoint`."""

from __future__ import annotations

import jax
import numpy as np

from r1v2_jax.recipes.final import write_final
from r1v2_jax.recipes.inputs import StageInputs
from r1v2_jax.recipes.result import StageResult
from r1v2_jax.train.feed import as_feed, limits_of


def pair_scorer(cfg, inputs: StageInputs, params, limits):
    """Scores pairs whose sizes are within `limits` (train.feed.FeedLimits)."""
    from r1v2_jax.rl.rm_trainer import JaxRewardModelScorer

    return JaxRewardModelScorer(inputs.model, params, tokenizer=inputs.tokenizer,
                                prompt=inputs.prompt, batch_size=int(cfg.rm.score_batch_size),
                                seq_len=-(-limits.sequence_tokens // 16) * 16,  # as pair_seq_len
                                max_tiles=limits.tiles)


def run(cfg, inputs: StageInputs, workdir: str, *, stage: str = "rm", log=print,
        stop_after: int | None = None) -> StageResult:
    """inputs.params: the policy the reward model starts from (a value head is added)."""
    from r1v2_jax.models.reward_model import init_reward_model_params
    from r1v2_jax.rl.rewards import calibrate
    from r1v2_jax.rl.rm_stage import RMTrainer
    from r1v2_jax.rl.rm_trainer import ranking_accuracy

    r = cfg.rm
    feed = as_feed(inputs.train, int(cfg.train.seed), uid=lambda p: p.example.uid)
    every = feed.limits  # the shapes of every pair: training and held-out
    if inputs.heldout:
        every = every.merge(limits_of(inputs.heldout))

    def ranking(params, pairs):
        return ranking_accuracy(pair_scorer(cfg, inputs, params, every), pairs)

    rm_params = init_reward_model_params(inputs.model, jax.random.key(int(r.seed)),
                                         inputs.params, head_init_std=float(r.head_init_std))
    trainer = RMTrainer(cfg, inputs.model, rm_params, train=feed,
                        heldout=inputs.heldout, pad_id=inputs.tokenizer.pad_id, workdir=workdir,
                        ranking_accuracy=ranking, stage=stage, log=log, mesh=inputs.mesh,
                        rules=inputs.rules)
    last = trainer.run(stop_after=stop_after)
    params = trainer.params()
    if trainer.step < int(cfg.train.steps):
        return StageResult(params, last, "", trainer)
    scorer = pair_scorer(cfg, inputs, params, every)
    calibration_pairs = feed.first(int(r.num_calibration))
    chosen, rejected = scorer.score_pairs(calibration_pairs)
    calibration = calibrate(np.concatenate([chosen, rejected]))
    metrics = {k if k.startswith("eval_") else f"train_{k}": v for k, v in last.items()
               if k not in ("step", "stage", "seconds")}
    metrics.update(rm_calibration_mean=calibration.mean, rm_calibration_std=calibration.std,
                   rm_calibration_count=calibration.count)
    final = write_final(workdir, inputs, params, calibration=calibration, log=log)
    return StageResult(params, metrics, final, trainer)
