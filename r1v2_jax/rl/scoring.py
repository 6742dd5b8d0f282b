"""Batch scoring of responses for the trainers: the hybrid reward (rule accuracy under a
hard time limit + format + optional calibrated reward-model term) and, where the image
content is known, the hallucination flag."""

from __future__ import annotations

import atexit
from typing import Any, Callable, Sequence

import numpy as np

from r1v2_jax.rl.answers import AnswerCheckConfig
from r1v2_jax.rl.examples import PromptExample
from r1v2_jax.rl.rewards import (AnswerChecker, Calibration, HybridRewardConfig, RewardModelScorer,
                                 compute_rewards)

BatchScorer = Callable[[Sequence[PromptExample], Sequence[str]], dict[str, np.ndarray]]

_HYBRID_FIELDS = ("w_acc", "w_rm", "w_fmt", "rm_standardize", "rm_clip_tau", "rm_gate")


def hybrid_config(reward_cfg) -> HybridRewardConfig:
    # The prompt ends with "<think>\n" and responses include it: the format check sees it.
    return HybridRewardConfig(**{k: reward_cfg[k] for k in _HYBRID_FIELDS},
                              think_opened_by_prompt=False)


def make_scorer(reward_cfg, *, reward_model: RewardModelScorer | None = None,
                calibration: Calibration | None = None, log: Callable[[str], None] | None = None
                ) -> BatchScorer:
    config = hybrid_config(reward_cfg)
    checker = AnswerChecker(AnswerCheckConfig(
        check_timeout_s=float(reward_cfg.check_timeout_s),
        batch_timeout_s=float(reward_cfg.check_batch_timeout_s),
        num_workers=int(reward_cfg.check_workers)))
    atexit.register(checker.close)

    def score(examples: Sequence[PromptExample], responses: Sequence[str]) -> dict[str, Any]:
        out = compute_rewards([e.question for e in examples], responses,
                              [e.answer for e in examples], [e.answer_type for e in examples],
                              checker=checker, config=config, scorer=reward_model,
                              calibration=calibration, images=[e.pixel_values for e in examples])
        if log is not None:
            for r in set(out.reason):
                if r.startswith(("timeout", "error", "answer_too_long")):
                    log(f"reward: {out.reason.count(r)} response(s) scored 0: {r}")
        hal = np.zeros(len(examples), bool)
        for i, (e, resp) in enumerate(zip(examples, responses)):
            if e.scene is not None:
                from r1v2_jax.data.synthetic import hallucinated
                hal[i] = hallucinated(resp, e.scene, e.question)
        return {"reward": out.total, "accuracy": out.accuracy, "format": out.format,
                "rm": out.rm, "hallucinated": hal}

    return score
