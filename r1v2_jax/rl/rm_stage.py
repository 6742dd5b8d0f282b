"""The reward-model stage as a `Trainer`: Bradley-Terry on preference pairs with
checkpoints, exact resume and held-out ranking accuracy (`rl/rm_trainer.py` has the step).

Same data order and update as `train_reward_model` (pairs shuffled epoch after epoch with
seed train.seed, `rm.batch_size` pairs per step in micro-batches of `rm.micro_batch_size`);
the value head always trains, the rest per `train.trainable`.
"""

from __future__ import annotations

import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from r1v2_jax.data.records import DataState, next_batch
from r1v2_jax.models import VLMConfig
from r1v2_jax.models.reward_model import VALUE_HEAD
from r1v2_jax.rl.pairs import PreferencePair, pair_seq_len
from r1v2_jax.rl.rm_trainer import make_rm_update, rm_batch, rm_trainable_parts
from r1v2_jax.train.masks import merge_params, split_params
from r1v2_jax.train.optimizer import make_optimizer
from r1v2_jax.train.steps import cast_tree
from r1v2_jax.sharding import shardings_of
from r1v2_jax.train.trainer import Trainer, init_opt_state


class RMTrainer(Trainer):
    """cfg: a recipe with `rm` (batch_size, micro_batch_size, center_rewards_coefficient),
    `optim` and `train` sections. `ranking_accuracy(params, pairs)` evaluates held-out pairs
    (injected: it needs a scorer)."""

    def __init__(self, cfg, model_config: VLMConfig, rm_params, *,
                 train: Sequence[PreferencePair], heldout: Sequence[PreferencePair], pad_id: int,
                 workdir: str, ranking_accuracy=None, stage: str = "rm", log=print,
                 mesh=None, rules=None):
        super().__init__(cfg, workdir, stage=stage, log=log)
        r = cfg.rm
        self.config, self.pairs, self.heldout = model_config, list(train), list(heldout)
        self.pad_id, self._ranking = int(pad_id), ranking_accuracy
        self.batch_size, self.micro = int(r.batch_size), int(r.micro_batch_size)
        if len(self.pairs) < self.batch_size:
            raise ValueError(f"rm: {len(self.pairs)} training pairs, fewer than "
                             f"rm.batch_size={self.batch_size}")
        if self.batch_size % self.micro:
            raise ValueError(f"rm.batch_size={self.batch_size} must be a multiple of "
                             f"rm.micro_batch_size={self.micro}")
        self.seq_len = pair_seq_len(self.pairs)
        self.tiles_per_micro = self.micro * max(len(p.example.pixel_values) for p in self.pairs)
        size = model_config.vision.image_size
        self.image_shape = (size, size, model_config.vision.num_channels)
        self.mesh, self.rules = mesh, rules
        if mesh is not None:
            from r1v2_jax.sharding import param_shardings
            lm = {k: v for k, v in rm_params.items() if k != VALUE_HEAD}
            replicated = NamedSharding(mesh, PartitionSpec())
            rm_params = {**jax.device_put(lm, param_shardings(model_config, mesh, rules)),
                         VALUE_HEAD: jax.device_put(rm_params[VALUE_HEAD], replicated)}
        trainable, self.frozen = split_params(rm_params, rm_trainable_parts(cfg.train.trainable))
        self.compute_dtype = None
        if cfg.optim.master_fp32:
            self.compute_dtype = model_config.jnp_param_dtype
            trainable = cast_tree(trainable, jnp.float32)
        self.trainable = jax.tree.map(jnp.copy, trainable)  # the update donates it
        optimizer = make_optimizer(cfg.optim)
        self.opt_state = init_opt_state(optimizer, self.trainable, mesh)
        center = float(r.center_rewards_coefficient) or None
        self.update = make_rm_update(
            model_config, optimizer, center_rewards_coefficient=center,
            compute_dtype=self.compute_dtype, mesh=mesh, rules=rules,
            state_shardings=(shardings_of(self.trainable), shardings_of(self.opt_state))
            if mesh is not None else None)
        self.data_state = DataState()
        self.counters = {"skipped_updates": 0}

    def params(self):
        trainable = self.trainable
        if self.compute_dtype is not None:
            trainable = cast_tree(trainable, self.compute_dtype)
        return merge_params(trainable, self.frozen)

    def device_state(self):
        return {"trainable": self.trainable, "opt_state": self.opt_state}

    def load_device_state(self, state):
        self.trainable, self.opt_state = state["trainable"], state["opt_state"]

    def host_state(self):
        return {"data": self.data_state.to_dict(), "counters": dict(self.counters)}

    def load_host_state(self, host):
        self.data_state = DataState.from_dict(host["data"])
        self.counters = dict(host["counters"])

    def evaluate(self):
        if self._ranking is None or not self.heldout:
            return {}
        return {f"eval_{k}": v for k, v in self._ranking(self.params(), self.heldout).items()}

    def train_step(self):
        t0 = time.time()
        pairs, self.data_state = next_batch(self.pairs, self.batch_size, self.data_state,
                                            int(self.cfg.train.seed))
        batch = rm_batch(pairs, seq_len=self.seq_len, micro=self.micro,
                         tiles_per_micro=self.tiles_per_micro, pad_id=self.pad_id,
                         image_shape=self.image_shape)
        self.trainable, self.opt_state, m = self.update(self.frozen, self.trainable,
                                                        self.opt_state, batch)
        m = {k: float(np.asarray(v)) for k, v in m.items()}
        self.counters["skipped_updates"] += int(m.pop("skipped"))
        self.step += 1
        return {"step": self.step, "stage": self.stage, **m,
                "skipped_updates": self.counters["skipped_updates"],
                "seconds": time.time() - t0}
