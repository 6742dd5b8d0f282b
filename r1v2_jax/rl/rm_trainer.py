"""Training and serving the reward model (`models/reward_model.py`).

Training: Bradley-Terry on (prompt, chosen, rejected) pairs, loss `reward_model_loss`
(mean -log sigma(s+ - s-), TRL `RewardTrainer`), micro-batched with exact accumulation
(each micro-batch contributes (b * its mean loss, b)), trainable-part masks of
`train/masks.py` plus the value head, which always trains.
Serving: `JaxRewardModelScorer`, the `RewardModelScorer` of the hybrid reward: jitted,
fixed batch and sequence shapes (one compilation), fp32 scores.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from r1v2_jax.data.prompts import PromptConfig, completion_of, encode_prompt
from r1v2_jax.data.tokenizer import Tokenizer
from r1v2_jax.losses import reward_model_loss
from r1v2_jax.models import VLMConfig
from r1v2_jax.models.reward_model import VALUE_HEAD, reward_scores
from r1v2_jax.rl.batching import pack_sequences, pack_tiles, to_micro
from r1v2_jax.rl.pair_forward import pair_rows
from r1v2_jax.rl.pairs import PreferencePair
from r1v2_jax.train.masks import trainable_parts
from r1v2_jax.train.steps import accumulate, apply_update, merged


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class RMBatch:
    """[M, b, T] ids / masks of both sides; pixel_values [M, tiles, H, W, 3] (the pair's
    prompt images, shared by chosen and rejected) or None."""

    chosen_ids: jax.Array
    chosen_mask: jax.Array
    rejected_ids: jax.Array
    rejected_mask: jax.Array
    pixel_values: jax.Array | None = None


def rm_batch(pairs: Sequence[PreferencePair], *, seq_len: int, micro: int, tiles_per_micro: int,
             pad_id: int, image_shape: tuple[int, int, int]) -> RMBatch:
    prompts = [p.example.prompt_ids for p in pairs]
    c_ids, c_mask, _ = pack_sequences(prompts, [p.chosen_ids for p in pairs], seq_len, pad_id)
    r_ids, r_mask, _ = pack_sequences(prompts, [p.rejected_ids for p in pairs], seq_len, pad_id)
    pixels = None
    if tiles_per_micro:
        pixels = pack_tiles([p.example.pixel_values for p in pairs], tiles_per_micro, micro,
                            image_shape)
    return RMBatch(to_micro(c_ids, micro), to_micro(c_mask, micro), to_micro(r_ids, micro),
                   to_micro(r_mask, micro), pixels)


def pair_scores(config: VLMConfig, params, mb: RMBatch):
    """(s+, s-) [b] each, in one forward over the 2b rows (each side's rows see their
    prompts' own tiles: `rl/pair_forward.py`)."""
    b = mb.chosen_ids.shape[0]
    ids, mask, pixels = pair_rows(config, mb.chosen_ids, mb.chosen_mask, mb.rejected_ids,
                                  mb.rejected_mask, mb.pixel_values)
    s = reward_scores(config, params, ids, mask, pixels)
    return s[:b], s[b:]


def rm_terms(config: VLMConfig, center_coef: float | None, frozen, compute_dtype, trainable,
             mb: RMBatch):
    chosen, rejected = pair_scores(config, merged(trainable, frozen, compute_dtype), mb)
    loss, metrics = reward_model_loss(chosen, rejected, center_rewards_coefficient=center_coef)
    b = jnp.float32(chosen.shape[0])
    return loss * b, b, {"accuracy": metrics["accuracy"] * b, "margin": metrics["margin"] * b,
                         "pairs": b}


def rm_update(config, center_coef, optimizer, frozen, trainable, opt_state, batch: RMBatch,
              compute_dtype=None):
    terms = functools.partial(rm_terms, config, center_coef, frozen, compute_dtype)
    loss, grads, sums = accumulate(terms, trainable, batch)
    trainable, opt_state, upd = apply_update(optimizer, trainable, opt_state, grads, loss)
    n = jnp.maximum(sums["pairs"], 1.0)
    return trainable, opt_state, {"loss": loss, "accuracy": sums["accuracy"] / n,
                                  "margin": sums["margin"] / n, **upd}


def make_rm_update(config: VLMConfig, optimizer, *, center_rewards_coefficient=None,
                   compute_dtype=None, mesh=None, rules=None, state_shardings=None):
    """The compiled `rm_update` (`sharding.compile_update`), trainable and optimizer state
    donated. (frozen, trainable, opt_state, batch) -> (trainable, opt_state, metrics)."""
    from r1v2_jax.sharding import compile_update

    fn = functools.partial(rm_update, config, center_rewards_coefficient, optimizer,
                           compute_dtype=compute_dtype)
    return compile_update(fn, mesh=mesh, rules=rules, state_shardings=state_shardings,
                          donate_argnums=(1, 2))


def rm_trainable_parts(name: str) -> tuple[str, ...]:
    """The policy's trainable-part names + the value head."""
    return trainable_parts(name) + (VALUE_HEAD,)


# ----------------------------------------------------------------------------- serving
def tiles_per_image(question: str, num_tiles: int, image_tag: str = "<image>") -> list[int]:
    """Per-image tile counts of a prompt from its total (one image: all of them)."""
    tags = len(re.findall(re.escape(image_tag), question))
    if tags == 0 and num_tiles == 0:
        return []
    if tags == 1 and num_tiles >= 1:
        return [num_tiles]
    if tags == num_tiles:
        return [1] * tags
    raise ValueError(f"reward model: prompt has {tags} {image_tag} tag(s) and {num_tiles} "
                     f"image tile(s): cannot tell which tiles belong to which image")


@functools.lru_cache(maxsize=4)
def _jitted_scores(config: VLMConfig):
    """One compiled scorer per model config and shape, shared by scorer instances."""
    return jax.jit(functools.partial(reward_scores, config))


class JaxRewardModelScorer:
    """`RewardModelScorer` over a JAX reward model. Inputs are packed into fixed
    [batch_size, seq_len] rows (+ batch_size * max_tiles image tiles); longer inputs are an
    error naming the field to raise."""

    def __init__(self, config: VLMConfig, params, *, tokenizer: Tokenizer, prompt: PromptConfig,
                 batch_size: int, seq_len: int, max_tiles: int = 1):
        self.config, self.params, self.tok, self.prompt = config, params, tokenizer, prompt
        self.batch_size, self.seq_len = int(batch_size), int(seq_len)
        self.max_tiles = int(max_tiles)
        self._fn = _jitted_scores(config)

    def score_tokens(self, prompt_ids: Sequence[np.ndarray], completion_ids: Sequence[np.ndarray],
                     tiles: Sequence[np.ndarray]) -> np.ndarray:
        """fp32 [N] scores of prompt + completion token sequences with their image tiles."""
        n, bs = len(prompt_ids), self.batch_size
        size = self.config.vision.image_size
        shape = (size, size, self.config.vision.num_channels)
        out = np.zeros(n, np.float32)
        for start in range(0, n, bs):
            idx = list(range(start, min(start + bs, n)))
            for i in idx:
                total = len(prompt_ids[i]) + len(completion_ids[i])
                if total > self.seq_len:
                    raise ValueError(f"reward model input {i} has {total} tokens, more than "
                                     f"rm.max_seq_len={self.seq_len}")
                if len(tiles[i]) > self.max_tiles:
                    raise ValueError(f"reward model input {i} has {len(tiles[i])} image tiles, "
                                     f"more than rm.max_tiles={self.max_tiles}")
            pad = bs - len(idx)  # padding rows: one real token, so their attention is defined
            ids, mask, _ = pack_sequences(
                [prompt_ids[i] for i in idx] + [np.zeros(1, np.int32)] * pad,
                [completion_ids[i] for i in idx] + [np.zeros(0, np.int32)] * pad,
                self.seq_len, self.tok.pad_id)
            all_tiles = [tiles[i] for i in idx] + [np.zeros((0,) + shape, np.float32)] * pad
            pixels = None
            if self.max_tiles:
                pixels = pack_tiles(all_tiles, bs * self.max_tiles, bs, shape)[0]
            scores = self._fn(self.params, jnp.asarray(ids), jnp.asarray(mask), pixels)
            out[start:start + len(idx)] = np.asarray(scores)[:len(idx)]
        return out

    def score(self, prompts: Sequence[str], responses: Sequence[str],
              images: Sequence[Any] | None) -> np.ndarray:
        """The hybrid reward's interface: question texts (with image tags), full responses
        (`<think>\\n...`), per-prompt image tiles [tiles, H, W, 3] (or None)."""
        tiles = [np.asarray(t, np.float32) for t in images] if images is not None else None
        if tiles is None:
            size = self.config.vision.image_size
            tiles = [np.zeros((0, size, size, 3), np.float32)] * len(prompts)
        tag = self.prompt.image_tag
        prompt_ids = [np.asarray(encode_prompt(self.tok, q, tiles_per_image(q, len(t), tag),
                                               self.prompt), np.int32)
                      for q, t in zip(prompts, tiles)]
        eos = [self.tok.eos_id]
        completions = [np.asarray(self.tok.encode(completion_of(r, self.prompt)) + eos, np.int32)
                       for r in responses]
        return self.score_tokens(prompt_ids, completions, tiles)

    def score_pairs(self, pairs: Sequence[PreferencePair]) -> tuple[np.ndarray, np.ndarray]:
        """(s+, s-) of pairs already in token form."""
        prompts = [p.example.prompt_ids for p in pairs]
        tiles = [p.example.pixel_values for p in pairs]
        return (self.score_tokens(prompts, [p.chosen_ids for p in pairs], tiles),
                self.score_tokens(prompts, [p.rejected_ids for p in pairs], tiles))


def ranking_accuracy(scorer: JaxRewardModelScorer,
                     pairs: Sequence[PreferencePair]) -> dict[str, float]:
    """Share of pairs ranked correctly (s+ > s-, ties count as wrong) and the mean gap."""
    chosen, rejected = scorer.score_pairs(pairs)
    return {"pair_accuracy": float(np.mean(chosen > rejected)),
            "pair_margin": float(np.mean(chosen - rejected)),
            "score_chosen": float(np.mean(chosen)), "score_rejected": float(np.mean(rejected))}
