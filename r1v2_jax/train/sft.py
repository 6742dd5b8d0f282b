"""Supervised fine-tuning on (prompt, completion) pairs: the demo's warm start, and the
generation term of MPO reused on its own (the "SFT" baseline of the paper's Table 3)."""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from r1v2_jax.data.records import DataState, next_batch
from r1v2_jax.losses import sft_loss
from r1v2_jax.models import VLMConfig
from r1v2_jax.train.masks import merge_params
from r1v2_jax.train.packing import pack_sequences, pack_tiles, to_micro
from r1v2_jax.train.steps import accumulate, apply_update, merged, sequence_token_logps
from r1v2_jax.sharding import shardings_of
from r1v2_jax.train.trainer import Trainer, init_opt_state


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SFTBatch:
    input_ids: jax.Array  # [M, b, T]
    attention_mask: jax.Array  # [M, b, T]
    completion_mask: jax.Array  # [M, b, T-1]
    pixel_values: jax.Array | None = None  # [M, tiles, H, W, 3]


def sft_terms(config: VLMConfig, frozen, compute_dtype, trainable, mb: SFTBatch):
    params = merged(trainable, frozen, compute_dtype)
    logps = sequence_token_logps(config, params, mb.input_ids, mb.attention_mask, mb.pixel_values)
    nll_sum, metrics = sft_loss(logps, mb.completion_mask, num_items_in_batch=1.0)
    return nll_sum, jnp.sum(mb.completion_mask), {"num_tokens": metrics["num_tokens"]}


def sft_update(config, optimizer, frozen, trainable, opt_state, batch: SFTBatch, compute_dtype=None):
    terms = functools.partial(sft_terms, config, frozen, compute_dtype)
    loss, grads, sums = accumulate(terms, trainable, batch)
    trainable, opt_state, upd = apply_update(optimizer, trainable, opt_state, grads, loss)
    return trainable, opt_state, {"loss": loss, **sums, **upd}


def make_sft_update(config: VLMConfig, optimizer, *, compute_dtype=None, mesh=None, rules=None,
                    state_shardings=None):
    """The compiled `sft_update` (`sharding.compile_update`), trainable and optimizer state
    donated. (frozen, trainable, opt_state, batch) -> (trainable, opt_state, metrics)."""
    from r1v2_jax.sharding import compile_update

    fn = functools.partial(sft_update, config, optimizer, compute_dtype=compute_dtype)
    return compile_update(fn, mesh=mesh, rules=rules, state_shardings=state_shardings,
                          donate_argnums=(1, 2))


def sft_batch(prompts: Sequence[np.ndarray], completions: Sequence[np.ndarray],
              tiles: Sequence[np.ndarray], *, seq_len: int, micro: int, tiles_per_micro: int,
              pad_id: int, image_shape: tuple[int, int, int]) -> SFTBatch:
    ids, attn, comp = pack_sequences(prompts, completions, seq_len, pad_id)
    pixels = pack_tiles(tiles, tiles_per_micro, micro, image_shape) if tiles_per_micro else None
    return SFTBatch(to_micro(ids, micro), to_micro(attn, micro), to_micro(comp, micro), pixels)


@dataclasses.dataclass(frozen=True)
class SFTExample:
    """One tokenised SFT sequence: prompt ids, completion ids (eos included), image tiles."""

    prompt_ids: np.ndarray
    completion_ids: np.ndarray
    pixel_values: np.ndarray  # [tiles, H, W, 3]

    @classmethod
    def from_record(cls, record, tokenizer, tiling, prompt) -> "SFTExample":
        from r1v2_jax.data.image import preprocess_images
        from r1v2_jax.data.prompts import build_training_sequence

        images = preprocess_images(record.images, tiling)
        seq = build_training_sequence(tokenizer, record.question, images.num_tiles,
                                      record.response, prompt)
        return cls(seq.ids[:seq.prompt_length], seq.ids[seq.prompt_length:],
                   images.pixel_values)


class SFTTrainer(Trainer):
    """Supervised fine-tuning (the warm / cold start): `sft.batch_size` sequences per step,
    micro-batches of `sft.micro_batch_size`, token-mean NLL over completion tokens (exact
    over micro-batches). `evaluate` is injected (held-out generation lives in rl/)."""

    def __init__(self, cfg, model_config: VLMConfig, params, *, train: Sequence[SFTExample],
                 pad_id: int, workdir: str, evaluate=None, stage: str = "sft", log=print,
                 mesh=None, rules=None):
        from r1v2_jax.train.masks import split_params, trainable_parts
        from r1v2_jax.train.optimizer import make_optimizer
        from r1v2_jax.train.steps import cast_tree

        super().__init__(cfg, workdir, stage=stage, log=log)
        self.config, self.examples, self.pad_id = model_config, list(train), int(pad_id)
        self._evaluate = evaluate
        s = cfg.sft
        self.batch_size, self.micro = int(s.batch_size), int(s.micro_batch_size)
        if self.batch_size % self.micro:
            raise ValueError(f"sft.batch_size={self.batch_size} must be a multiple of "
                             f"sft.micro_batch_size={self.micro}")
        longest = max(len(e.prompt_ids) + len(e.completion_ids) for e in self.examples)
        self.seq_len = int(s.max_seq_len) or -(-longest // 16) * 16
        if longest > self.seq_len:
            raise ValueError(f"an SFT sequence has {longest} tokens, more than "
                             f"sft.max_seq_len={self.seq_len}")
        self.tiles_per_micro = self.micro * max(len(e.pixel_values) for e in self.examples)
        size = model_config.vision.image_size
        self.image_shape = (size, size, model_config.vision.num_channels)
        self.mesh, self.rules = mesh, rules
        if mesh is not None:
            from r1v2_jax.sharding import param_shardings
            params = jax.device_put(params, param_shardings(model_config, mesh, rules))
        trainable, self.frozen = split_params(params, trainable_parts(cfg.train.trainable))
        self.compute_dtype = None
        if cfg.optim.master_fp32:
            self.compute_dtype = model_config.jnp_param_dtype
            trainable = cast_tree(trainable, jnp.float32)
        self.trainable = jax.tree.map(jnp.copy, trainable)  # the update donates it
        optimizer = make_optimizer(cfg.optim)
        self.opt_state = init_opt_state(optimizer, self.trainable, mesh)
        self.update = make_sft_update(
            model_config, optimizer, compute_dtype=self.compute_dtype, mesh=mesh, rules=rules,
            state_shardings=(shardings_of(self.trainable), shardings_of(self.opt_state))
            if mesh is not None else None)
        self.data_state = DataState()
        self.counters = {"skipped_updates": 0}

    def params(self):
        from r1v2_jax.train.steps import cast_tree
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
        return self._evaluate(self.params()) if self._evaluate is not None else {}

    def train_step(self):
        t0 = time.time()
        batch, self.data_state = next_batch(self.examples, self.batch_size, self.data_state,
                                            int(self.cfg.train.seed))
        packed = sft_batch([e.prompt_ids for e in batch], [e.completion_ids for e in batch],
                           [e.pixel_values for e in batch], seq_len=self.seq_len,
                           micro=self.micro, tiles_per_micro=self.tiles_per_micro,
                           pad_id=self.pad_id, image_shape=self.image_shape)
        self.trainable, self.opt_state, m = self.update(self.frozen, self.trainable,
                                                        self.opt_state, packed)
        m = {k: float(v) for k, v in m.items()}
        self.counters["skipped_updates"] += int(m.pop("skipped"))
        self.step += 1
        return {"step": self.step, "stage": self.stage, **m,
                "skipped_updates": self.counters["skipped_updates"],
                "seconds": time.time() - t0}
