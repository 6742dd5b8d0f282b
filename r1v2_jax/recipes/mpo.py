"""Stage `mpo` (R1V2 stage 2): iterated MPO on the policy's own samples, paired by the
hybrid reward (`rl/mpo_trainer.py`), plus optional offline preference pairs
(`data.preferences`); ends by writing WORKDIR/final/.

`cfg` must already carry the stage's own optim/train/reward values: pass the recipe through
`mpo_stage_config` (done by `r1v2 train`), which applies `mpo.optim` / `mpo.train` /
`mpo.reward` over the shared sections.
"""

from __future__ import annotations

from r1v2_jax.recipes.inputs import StageInputs
from r1v2_jax.recipes.result import StageResult, finish


def mpo_stage_config(cfg):
    from r1v2_jax.rl.mpo_trainer import stage_config
    return stage_config(cfg, "mpo")


def run(cfg, inputs: StageInputs, workdir: str, *, stage: str = "mpo", log=print,
        stop_after: int | None = None) -> StageResult:
    from r1v2_jax.rl.mpo_trainer import MPOTrainer

    if inputs.score is None:
        raise ValueError("mpo: StageInputs.score (the hybrid-reward scorer) is required")
    trainer = MPOTrainer(cfg, inputs.model, inputs.params, tokenizer=inputs.tokenizer,
                         prompt=inputs.prompt, train=inputs.train, heldout=inputs.heldout,
                         score=inputs.score, workdir=workdir, stage=stage, log=log,
                         offline_pairs=inputs.offline_pairs, mesh=inputs.mesh,
                         rules=inputs.rules)
    return finish(trainer, trainer.run(stop_after=stop_after), workdir, inputs, log=log)
