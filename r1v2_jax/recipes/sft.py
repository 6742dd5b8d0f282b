"""Stage `sft` (the warm / cold start): supervised fine-tuning on SFT records (question +
response to imitate; `data/sft_records.py`), with greedy held-out accuracy on prompt
records when `data.heldout` is set; ends by writing WORKDIR/final/."""

from __future__ import annotations

from r1v2_jax.recipes.inputs import StageInputs
from r1v2_jax.recipes.result import StageResult, finish


def heldout_evaluator(cfg, inputs: StageInputs):
    """params -> greedy held-out metrics (None when there is nothing to evaluate)."""
    from r1v2_jax.rl.evaluate import evaluate

    if not inputs.heldout or inputs.score is None:
        return None
    return lambda params: evaluate(inputs.model, params, inputs.heldout,
                                   tokenizer=inputs.tokenizer, prompt=inputs.prompt,
                                   max_new_tokens=int(cfg.rollout.max_new_tokens),
                                   batch_size=int(cfg.rollout.eval_batch_size),
                                   score=inputs.score)


def run(cfg, inputs: StageInputs, workdir: str, *, stage: str = "sft", log=print,
        stop_after: int | None = None) -> StageResult:
    from r1v2_jax.train.sft import SFTTrainer

    trainer = SFTTrainer(cfg, inputs.model, inputs.params, train=inputs.train,
                         pad_id=inputs.tokenizer.pad_id, workdir=workdir,
                         evaluate=heldout_evaluator(cfg, inputs), stage=stage, log=log,
                         mesh=inputs.mesh, rules=inputs.rules)
    return finish(trainer, trainer.run(stop_after=stop_after), workdir, inputs, log=log)
