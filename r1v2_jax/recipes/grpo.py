"""Stage `grpo` (R1V2 stage 3): GRPO with the hybrid reward and the Selective Sample
Buffer (`rl/grpo_trainer.py`), from prompt records; ends by writing WORKDIR/final/."""

from __future__ import annotations

from r1v2_jax.recipes.inputs import StageInputs
from r1v2_jax.recipes.result import StageResult, finish


def run(cfg, inputs: StageInputs, workdir: str, *, stage: str = "grpo", log=print,
        stop_after: int | None = None) -> StageResult:
    """`stop_after`: leave after that many steps without writing final/ (a simulated crash)."""
    from r1v2_jax.rl.grpo_trainer import GRPOTrainer

    if inputs.score is None:
        raise ValueError("grpo: StageInputs.score (the hybrid-reward scorer) is required")
    trainer = GRPOTrainer(cfg, inputs.model, inputs.params, tokenizer=inputs.tokenizer,
                          prompt=inputs.prompt, train=inputs.train, heldout=inputs.heldout,
                          score=inputs.score, workdir=workdir, stage=stage, log=log,
                          mesh=inputs.mesh, rules=inputs.rules)
    return finish(trainer, trainer.run(stop_after=stop_after), workdir, inputs, log=log)
