"""The step loop every trainer runs (`Trainer.run`): resume, evaluate, train, log,
checkpoint, with a simulated crash for the resume tests.

Faults: SIGTERM / SIGINT (SLURM, `timeout`, Ctrl-C, a preempted VM) take effect between
steps: the step in flight finishes, its checkpoint is written, the run exits 128 + signal.
An async checkpoint in flight is always waited for (a crash does not lose it).
`train.max_nonfinite_steps` consecutive steps whose update was skipped for a non-finite loss
or gradient stop the run with an error (0 = never)."""

from __future__ import annotations

import contextlib
import signal
from typing import Any, Protocol

import jax

from r1v2_jax.errors import Interrupted, UserError, signals_raise, uninterrupted
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
    # One process: SIGTERM / SIGINT are handled here. Several: every process must save the
    # same step, so a signal is left to JAX's preemption notifier and the processes agree on
    # the step through `reached_preemption_sync_point` (see `_preempted`).
    handle = signals_raise() if jax.process_count() == 1 else contextlib.nullcontext()
    try:
        with handle:
            return _loop(trainer, steps, metrics, stop_after, eval_at_start)
    except Interrupted:
        # the signal was held until the step in flight finished (`uninterrupted`): the
        # state is a completed step; save it unless the newest checkpoint already has it
        if trainer.ckpt.latest_step() != trainer.step and trainer.step > 0:
            trainer.log(f"[{trainer.stage}] interrupted: saving step {trainer.step}")
            trainer.save(force=True)
        raise
    finally:
        trainer.ckpt.wait()  # a crash or signal must not lose an async save in flight
        if own_writer:
            metrics.close()


def _one_step(trainer: Trainer, steps: int, metrics: MetricsWriter, every: int) -> dict:
    """Train, evaluate when due, log, checkpoint when due."""
    record = trainer.train_step()
    feed = getattr(trainer, "feed", None)
    if feed is not None:  # records dropped at decode time so far (a streamed set)
        record.update(feed.metrics())
    if trainer.step == steps or (every and trainer.step % every == 0):
        record.update(trainer.evaluate())
    metrics.write(record)
    if trainer.ckpt.should_save(trainer.step) or trainer.step == steps:
        trainer.save(force=trainer.step == steps)
    return record


def _preempted(step: int) -> bool:
    """Multi-process runs: whether a preemption notice (SIGTERM to any process, e.g. a TPU
    maintenance event) reached every process at this step."""
    if jax.process_count() == 1:
        return False
    from jax.experimental import multihost_utils
    try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
    except RuntimeError:  # no preemption service (jax.distributed not initialised)
        return False


class NonFiniteTraining(UserError):
    """train.max_nonfinite_steps consecutive steps skipped their update (non-finite loss or
    gradients): the run stops instead of idling on a broken model."""


def _loop(trainer: Trainer, steps: int, metrics: MetricsWriter, stop_after, eval_at_start):
    if trainer.step == 0 and eval_at_start:
        metrics.write({"step": 0, "stage": trainer.stage, **trainer.evaluate()})
    from tqdm import tqdm

    train_cfg = trainer.cfg.train
    bar = tqdm(total=steps, initial=trainer.step, desc=trainer.stage, leave=False,
               disable=not train_cfg.get("progress_bar", False))
    every = int(train_cfg.eval_every)
    max_bad = int(train_cfg.get("max_nonfinite_steps", 0))
    done, record, bad, skipped_before = 0, {}, 0, None
    while trainer.step < steps:
        with uninterrupted():  # SIGTERM / Ctrl-C take effect between steps, after logging
            record = _one_step(trainer, steps, metrics, every)
        skipped = record.get("skipped_updates")
        if skipped is not None:
            bad = bad + 1 if skipped_before is not None and skipped > skipped_before else 0
            skipped_before = skipped
        if max_bad and bad >= max_bad:
            raise NonFiniteTraining(
                f"[{trainer.stage}] {bad} consecutive steps up to step {trainer.step} had a "
                f"non-finite loss or gradient and skipped their update "
                f"(train.max_nonfinite_steps={max_bad}); the newest checkpoint is step "
                f"{trainer.ckpt.latest_step()}: lower optim.lr or check the data and weights")
        if _preempted(trainer.step):
            raise Interrupted(signal.SIGTERM)  # saved by run_steps, on every process
        bar.update(1)
        done += 1
        if stop_after is not None and done >= stop_after:
            break
    bar.close()
    return record
