"""The recipe layer: one function per R1V2 training stage, shared by `r1v2 train` (the
product path: a converted checkpoint, JSONL data, a pod) and `r1v2 demo` (synthetic data).

    STAGES[name](cfg, inputs, workdir, log=...) -> StageResult

  sft   warm / cold start: supervised fine-tuning on SFT records
  rm    reward model: Bradley-Terry on preference records, calibrated
  mpo   mixed preference optimisation on the policy's own samples (hybrid reward)
  grpo  GRPO with the hybrid reward and the Selective Sample Buffer

Every stage ends by writing WORKDIR/final/ (`recipes/final.py`), the next stage's
`init.checkpoint` (and, for `rm`, GRPO's / MPO's `reward.rm_checkpoint`).
"""

from r1v2_jax.recipes import grpo, mpo, reward_model, sft
from r1v2_jax.recipes.inputs import StageInputs, inputs_from_config
from r1v2_jax.recipes.result import StageResult

STAGES = {"sft": sft.run, "rm": reward_model.run, "mpo": mpo.run, "grpo": grpo.run}

__all__ = ["STAGES", "StageInputs", "StageResult", "inputs_from_config"]
