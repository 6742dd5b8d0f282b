"""The step loop shared by the GRPO and MPO trainers: resume, evaluate, train, log,
checkpoint, with a simulated crash for the resume tests."""

from __future__ import annotations

from typing import Any, Protocol

from r1v2_jax.train.metrics import MetricsWriter


class Trainer(Protocol):
    step: int
    workdir: str
    stage: str
    cfg: Any
    ckpt: Any

    def maybe_resume(self) -> bool: ...
    def evaluate(self) -> dict[str, float]: ...
    def train_step(self) -> dict[str, Any]: ...
    def save(self, force: bool = False) -> None: ...


def run_steps(trainer: Trainer, steps: int, *, metrics: MetricsWriter | None = None,
              stop_after: int | None = None, eval_at_start: bool = True) -> dict[str, Any]:
    """Trains `trainer` to `steps`, resuming from its newest checkpoint. Held-out evaluation
    at step 0 (`eval_at_start`), every train.eval_every steps and at the end; a checkpoint
    every train.checkpoint_every steps and at the end. `stop_after` simulates a crash after
    that many steps of this call (tests). Returns the last step's record ({} if none ran)."""
    resumed = trainer.maybe_resume()
    own_writer = metrics is None
    metrics = metrics or MetricsWriter(trainer.workdir,
                                       resume_step=trainer.step if resumed else None)
    if trainer.step == 0 and eval_at_start:
        metrics.write({"step": 0, "stage": trainer.stage, **trainer.evaluate()})
    from tqdm import tqdm

    train_cfg = trainer.cfg.train
    bar = tqdm(total=steps, initial=trainer.step, desc=trainer.stage, leave=False,
               disable=not train_cfg.get("progress_bar", False))
    every = int(train_cfg.eval_every)
    done, record = 0, {}
    while trainer.step < steps:
        record = trainer.train_step()
        if trainer.step == steps or (every and trainer.step % every == 0):
            record.update(trainer.evaluate())
        metrics.write(record)
        if trainer.ckpt.should_save(trainer.step) or trainer.step == steps:
            trainer.save(force=trainer.step == steps)
        bar.update(1)
        done += 1
        if stop_after is not None and done >= stop_after:
            break
    bar.close()
    trainer.ckpt.wait()
    if own_writer:
        metrics.close()
    return record
