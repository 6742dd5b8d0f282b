"""What a recipe returns."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class StageResult:
    params: Any  # the trained parameters (policy, or reward model for `rm`)
    metrics: dict[str, Any]  # final held-out metrics (eval_*), plus stage extras
    final_dir: str  # WORKDIR/final
    trainer: Any = None  # the trainer, for callers that inspect its state (tests, demo)


def final_eval(trainer, last: dict[str, Any]) -> dict[str, Any]:
    """The held-out metrics of the last step (the loop evaluates at the end), or a fresh
    evaluation when that step's record has none (a resumed, already finished run)."""
    out = {k: v for k, v in last.items() if k.startswith("eval_")}
    return out or trainer.evaluate()


def finish(trainer, last: dict[str, Any], workdir: str, inputs, *, log=print) -> StageResult:
    """A policy stage's end: a run stopped early (`stop_after`) returns without final/;
    a finished one writes WORKDIR/final/ and returns its final held-out metrics."""
    from r1v2_jax.recipes.final import write_final

    params = trainer.params()
    if trainer.step < int(trainer.cfg.train.steps):
        return StageResult(params, last, "", trainer)
    return StageResult(params, final_eval(trainer, last),
                       write_final(workdir, inputs, params, log=log), trainer)
