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
