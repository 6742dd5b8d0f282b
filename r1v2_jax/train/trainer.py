"""The trainer base every stage (SFT, reward model, MPO, GRPO) derives from.

A subclass says what its state is and what one step does:

  device_state() / load_device_state(state)   the jax pytree saved with orbax (trainable
                                              params, optimizer state, RNG, step, ...)
  host_state() / load_host_state(host)        JSON-able host state (data position, buffers)
  train_step() -> record                      one step; must advance `self.step`
  evaluate() -> metrics                       held-out evaluation ({} if none)
  params()                                    the full parameter tree of the current model

and gets from the base: checkpoints every `train.checkpoint_every` steps (async, the newest
`train.keep_checkpoints` kept), exact resume from the newest checkpoint in
`WORKDIR/checkpoints`, metrics in `WORKDIR/metrics.jsonl` + TensorBoard, held-out evaluation
at the start (`train.eval_at_start`, default true), every `train.eval_every` steps and at the
end, and `run()`.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

from r1v2_jax.train.checkpoint import Checkpointer
from r1v2_jax.train.loop import run_steps
from r1v2_jax.train.masks import merge_params, split_params
from r1v2_jax.train.metrics import MetricsWriter
from r1v2_jax.train.steps import cast_tree


def init_opt_state(optimizer, trainable, mesh=None):
    """`optimizer.init(trainable)`, on a mesh created straight on the parameters' shards
    (Adam moments follow their parameter, counters replicated)."""
    if mesh is None:
        return jax.jit(optimizer.init)(trainable)
    from r1v2_jax.sharding import sharded_opt_init
    return sharded_opt_init(optimizer, trainable, mesh)


def join(workdir: str, *parts: str) -> str:
    """Path join that keeps bucket URLs (gs://...) intact."""
    return "/".join([str(workdir).rstrip("/"), *parts]) if "://" in str(workdir) \
        else os.path.join(workdir, *parts)


class Trainer:
    """Base class; see the module docstring. `cfg.train` supplies checkpoint_every,
    keep_checkpoints, async_checkpoint, eval_every, steps and progress_bar."""

    def __init__(self, cfg, workdir: str, *, stage: str, log: Callable[[str], None] = print):
        self.cfg, self.workdir, self.stage, self.log = cfg, workdir, stage, log
        self.step = 0
        t = cfg.train
        self.eval_at_start = bool(t.get("eval_at_start", True))
        self.ckpt = Checkpointer(join(workdir, "checkpoints"),
                                 save_every=int(t.checkpoint_every), keep=int(t.keep_checkpoints),
                                 async_save=bool(t.async_checkpoint))

    # ---------------------------------------------------------------- subclass interface
    def device_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_device_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def host_state(self) -> dict[str, Any]:
        return {}

    def load_host_state(self, host: dict[str, Any]) -> None:
        pass

    def train_step(self) -> dict[str, Any]:
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        return {}

    def params(self):
        """The full parameter tree: the trainable part (in the param dtype when fp32 master
        weights are kept) merged with the frozen part."""
        trainable = self.trainable
        if self.compute_dtype is not None:
            trainable = cast_tree(trainable, self.compute_dtype)
        return merge_params(trainable, self.frozen)

    # ---------------------------------------------------------------- shared set-up
    def setup_trainable(self, model_config, params, parts: tuple[str, ...], optimizer, *,
                        mesh=None, rules=None, param_shardings=None) -> None:
        """Sets mesh, rules, frozen, trainable, compute_dtype and opt_state: params placed on
        the mesh (`param_shardings`, default the model's rule table), split by `parts`, fp32
        master weights with optim.master_fp32, the trainable part copied (the update donates
        it, and the caller's arrays stay valid) and the optimizer state created on its
        shards."""
        self.mesh, self.rules = mesh, rules
        if mesh is not None:
            if param_shardings is None:
                from r1v2_jax.sharding import param_shardings as rule_shardings
                param_shardings = rule_shardings(model_config, mesh, rules)
            params = jax.device_put(params, param_shardings)
        trainable, self.frozen = split_params(params, parts)
        self.compute_dtype = None
        if self.cfg.optim.master_fp32:
            self.compute_dtype = model_config.jnp_param_dtype
            trainable = cast_tree(trainable, jnp.float32)
        self.trainable = jax.tree.map(jnp.copy, trainable)
        self.opt_state = init_opt_state(optimizer, self.trainable, mesh)

    def state_shardings(self):
        """(trainable, optimizer state) shardings for `sharding.compile_update` on a mesh."""
        if self.mesh is None:
            return None
        from r1v2_jax.sharding import shardings_of
        return shardings_of(self.trainable), shardings_of(self.opt_state)

    # ---------------------------------------------------------------- provided
    def _full_device_state(self) -> dict[str, Any]:
        return {**self.device_state(), "step": jnp.asarray(self.step, jnp.int32)}

    def _replicated(self):
        """On a multi-device mesh: the replicated sharding for leaves that live on one
        device (step counters, RNG keys, the BCO delta: created uncommitted). A restored
        array is committed, and one committed to a single device cannot meet sharded
        parameters in a jitted step; with several processes orbax cannot save it at all."""
        mesh = getattr(self, "mesh", None)
        if mesh is None or mesh.size == 1:
            return None
        return NamedSharding(mesh, PartitionSpec())

    def _saved_state(self) -> dict[str, Any]:
        state, replicated = self._full_device_state(), self._replicated()
        if replicated is None:
            return state
        return jax.tree.map(lambda x: jax.device_put(x, replicated)
                            if isinstance(x.sharding, SingleDeviceSharding) else x, state)

    def _restore_template(self) -> dict[str, Any]:
        """The device state's shapes and shardings (single-device leaves: replicated)."""
        state, replicated = self._full_device_state(), self._replicated()
        if replicated is None:
            return state
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated)
                            if isinstance(x.sharding, SingleDeviceSharding) else x, state)

    def save(self, force: bool = False) -> None:
        self.ckpt.save(self.step, self._saved_state(), self.host_state(), force=force)

    def maybe_resume(self) -> bool:
        """Restores the newest checkpoint that reads back whole; an unreadable one (a disk
        error, a truncated file) is skipped with a message naming it."""
        steps = self.ckpt.all_steps()
        for step in steps:
            try:
                state, host = self.ckpt.restore(step, self._restore_template())
                step_in_state = int(state.pop("step"))
                self.load_device_state(state)
                self.load_host_state(host)
            except Exception as err:  # noqa: BLE001 - any failure means "not intact"
                self.log(f"[{self.stage}] checkpoint step {step} in {self.ckpt.directory} is "
                         f"unreadable ({type(err).__name__}: {str(err)[:200]}); trying an "
                         f"older one")
                continue
            self.step = step_in_state
            skipped = [s for s in steps if s > step]
            self.log(f"[{self.stage}] resumed from step {self.step}"
                     + (f" (skipped unreadable checkpoint(s) {skipped})" if skipped else ""))
            return True
        if steps:
            raise RuntimeError(f"[{self.stage}] no checkpoint in {self.ckpt.directory} can be "
                               f"read (steps {steps}); move them away to start afresh")
        return False

    def run(self, steps: int | None = None, metrics: MetricsWriter | None = None,
            stop_after: int | None = None) -> dict[str, Any]:
        """Trains to `steps` (default train.steps), resuming from the newest checkpoint.
        `stop_after` simulates a crash after that many steps of this call (tests)."""
        steps = int(self.cfg.train.steps if steps is None else steps)
        return run_steps(self, steps, metrics=metrics, stop_after=stop_after,
                         eval_at_start=self.eval_at_start)


class BatchTrainer(Trainer):
    """A trainer whose step is one optimizer update on the next batch of a fixed dataset
    (SFT, the reward model): device state = trainable part + optimizer state; host state =
    data position + counters. Subclasses set `self.feed` (train/feed.py), `self.batch_size`
    and `self.update(frozen, trainable, opt_state, batch)`, and pack a batch in `pack`."""

    def _init_batches(self):
        self.counters = {"skipped_updates": 0}

    def device_state(self):
        return {"trainable": self.trainable, "opt_state": self.opt_state}

    def load_device_state(self, state):
        self.trainable, self.opt_state = state["trainable"], state["opt_state"]

    def host_state(self):
        return {"data": self.feed.get_state(), "counters": dict(self.counters)}

    def load_host_state(self, host):
        self.feed.set_state(host["data"])
        self.counters = dict(host["counters"])

    def pack(self, batch):
        raise NotImplementedError

    def train_step(self):
        t0 = time.time()
        batch = self.feed.take(self.batch_size)
        self.trainable, self.opt_state, m = self.update(self.frozen, self.trainable,
                                                        self.opt_state, self.pack(batch))
        m = {k: float(v) for k, v in m.items()}
        self.counters["skipped_updates"] += int(m.pop("skipped"))
        self.step += 1
        return {"step": self.step, "stage": self.stage, **m,
                "skipped_updates": self.counters["skipped_updates"],
                "seconds": time.time() - t0}
