"""Supervised fine-tuning on (prompt, completion) pairs: the demo's warm start, and the
generation term of MPO reused on its own (the "SFT" baseline of the paper's Table 3)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from r1v2_jax.losses import sft_loss
from r1v2_jax.models import VLMConfig
from r1v2_jax.train.packing import pack_sequences, pack_tiles, to_micro
from r1v2_jax.train.steps import accumulate, apply_update, merged, sequence_token_logps
from r1v2_jax.train.feed import Feed, as_feed
from r1v2_jax.train.trainer import BatchTrainer


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


class SFTTrainer(BatchTrainer):
    """Supervised fine-tuning (the warm / cold start): `sft.batch_size` sequences per step,
    micro-batches of `sft.micro_batch_size`, token-mean NLL over completion tokens (exact
    over micro-batches). `evaluate` is injected (held-out generation lives in rl/)."""

    def __init__(self, cfg, model_config: VLMConfig, params, *,
                 train: "Sequence[SFTExample] | Feed",
                 pad_id: int, workdir: str, evaluate=None, stage: str = "sft", log=print,
                 mesh=None, rules=None):
        from r1v2_jax.train.masks import trainable_parts
        from r1v2_jax.train.optimizer import make_optimizer

        super().__init__(cfg, workdir, stage=stage, log=log)
        self.config, self.pad_id = model_config, int(pad_id)
        self.feed = as_feed(train, int(cfg.train.seed))
        self._evaluate = evaluate
        s = cfg.sft
        self.batch_size, self.micro = int(s.batch_size), int(s.micro_batch_size)
        if self.batch_size % self.micro:
            raise ValueError(f"sft.batch_size={self.batch_size} must be a multiple of "
                             f"sft.micro_batch_size={self.micro}")
        limits = self.feed.limits
        longest = limits.sequence_tokens
        self.seq_len = int(s.max_seq_len) or -(-longest // 16) * 16
        if longest > self.seq_len:
            raise ValueError(f"an SFT sequence has {longest} tokens, more than "
                             f"sft.max_seq_len={self.seq_len}")
        self.tiles_per_micro = self.micro * limits.tiles
        size = model_config.vision.image_size
        self.image_shape = (size, size, model_config.vision.num_channels)
        optimizer = make_optimizer(cfg.optim)
        self.setup_trainable(model_config, params, trainable_parts(cfg.train.trainable),
                             optimizer, mesh=mesh, rules=rules)
        self.update = make_sft_update(model_config, optimizer, compute_dtype=self.compute_dtype,
                                      mesh=mesh, rules=rules,
                                      state_shardings=self.state_shardings())
        self._init_batches()

    def evaluate(self):
        return self._evaluate(self.params()) if self._evaluate is not None else {}

    def pack(self, batch):
        return sft_batch([e.prompt_ids for e in batch], [e.completion_ids for e in batch],
                         [e.pixel_values for e in batch], seq_len=self.seq_len,
                         micro=self.micro, tiles_per_micro=self.tiles_per_micro,
                         pad_id=self.pad_id, image_shape=self.image_shape)
