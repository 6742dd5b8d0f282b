"""The reward-model stage as a `Trainer`: Bradley-Terry on preference pairs with
checkpoints, exact resume and held-out ranking accuracy (`rl/rm_trainer.py` has the step).

Pairs shuffled epoch after epoch with seed train.seed (train/feed.py), `rm.batch_size` pairs
per step in micro-batches of `rm.micro_batch_size`; the value head always trains, the rest
per `train.trainable`.
"""

from __future__ import annotations

from typing import Sequence

import jax
from jax.sharding import NamedSharding, PartitionSpec

from r1v2_jax.models import VLMConfig
from r1v2_jax.models.reward_model import VALUE_HEAD
from r1v2_jax.rl.pairs import PreferencePair
from r1v2_jax.rl.rm_trainer import make_rm_update, rm_batch, rm_trainable_parts
from r1v2_jax.train.feed import Feed, as_feed
from r1v2_jax.train.optimizer import make_optimizer
from r1v2_jax.train.trainer import BatchTrainer


class RMTrainer(BatchTrainer):
    """cfg: a recipe with `rm` (batch_size, micro_batch_size, center_rewards_coefficient),
    `optim` and `train` sections. `ranking_accuracy(params, pairs)` evaluates held-out pairs
    (injected: it needs a scorer)."""

    def __init__(self, cfg, model_config: VLMConfig, rm_params, *,
                 train: "Sequence[PreferencePair] | Feed", heldout: Sequence[PreferencePair], pad_id: int,
                 workdir: str, ranking_accuracy=None, stage: str = "rm", log=print,
                 mesh=None, rules=None):
        super().__init__(cfg, workdir, stage=stage, log=log)
        r = cfg.rm
        self.config, self.heldout = model_config, list(heldout)
        self.feed = as_feed(train, int(cfg.train.seed), uid=lambda p: p.example.uid)
        self.pad_id, self._ranking = int(pad_id), ranking_accuracy
        self.batch_size, self.micro = int(r.batch_size), int(r.micro_batch_size)
        if len(self.feed) < self.batch_size:
            raise ValueError(f"rm: {len(self.feed)} training pairs, fewer than "
                             f"rm.batch_size={self.batch_size}")
        if self.batch_size % self.micro:
            raise ValueError(f"rm.batch_size={self.batch_size} must be a multiple of "
                             f"rm.micro_batch_size={self.micro}")
        self.seq_len = -(-self.feed.limits.sequence_tokens // 16) * 16  # as pair_seq_len
        self.tiles_per_micro = self.micro * self.feed.limits.tiles
        size = model_config.vision.image_size
        self.image_shape = (size, size, model_config.vision.num_channels)
        shardings = None
        if mesh is not None:  # the backbone by the rule table, the small head replicated
            from r1v2_jax.sharding import param_shardings
            shardings = {**param_shardings(model_config, mesh, rules),
                         VALUE_HEAD: jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()),
                                                  rm_params[VALUE_HEAD])}
        optimizer = make_optimizer(cfg.optim)
        self.setup_trainable(model_config, rm_params, rm_trainable_parts(cfg.train.trainable),
                             optimizer, mesh=mesh, rules=rules, param_shardings=shardings)
        center = float(r.center_rewards_coefficient) or None
        self.update = make_rm_update(model_config, optimizer, center_rewards_coefficient=center,
                                     compute_dtype=self.compute_dtype, mesh=mesh, rules=rules,
                                     state_shardings=self.state_shardings())
        self._init_batches()

    def evaluate(self):
        if self._ranking is None or not self.heldout:
            return {}
        return {f"eval_{k}": v for k, v in self._ranking(self.params(), self.heldout).items()}

    def pack(self, pairs):
        return rm_batch(pairs, seq_len=self.seq_len, micro=self.micro,
                        tiles_per_micro=self.tiles_per_micro, pad_id=self.pad_id,
                        image_shape=self.image_shape)
