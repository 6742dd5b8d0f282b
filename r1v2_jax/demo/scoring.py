"""The demo's reward: the hybrid reward's rule terms (accuracy + format) and the
hallucination flag from the scene's known content."""

from __future__ import annotations

import re

from r1v2_jax.data import synthetic
from r1v2_jax.rl.answers import AnswerCheckConfig, check_answer

_FORMAT = re.compile(r"^<think>\n(?:(?!<think>|</think>).)*</think>\s*(\S.*)$", re.S)


def make_scorer(reward_cfg):
    check_cfg = AnswerCheckConfig(check_timeout_s=float(reward_cfg.check_timeout_s))
    w_acc, w_fmt = float(reward_cfg.w_accuracy), float(reward_cfg.w_format)

    def score(example, response: str) -> dict:
        acc = check_answer(response, example.answer, example.answer_type, check_cfg).score
        fmt = 1.0 if _FORMAT.match(response) else 0.0
        hal = example.scene is not None and synthetic.hallucinated(response, example.scene,
                                                                     example.question)
        return {"reward": w_acc * acc + w_fmt * fmt, "accuracy": acc, "format": fmt,
                "hallucinated": hal}

    return score
