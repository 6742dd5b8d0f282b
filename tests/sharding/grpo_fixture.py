"""A tiny GRPO problem (model, batch, optimizer) shared by the sharded and multi-process
tests. Each sample: one image tile (4 placeholders), a prompt, a completion, padding."""

from __future__ import annotations

import ml_collections
import numpy as np

from r1v2_jax.models import VLMConfig
from r1v2_jax.rl.grpo_step import GRPOBatch, GRPOLossOptions
from r1v2_jax.train.config_loader import load_config_file
from r1v2_jax.train.optimizer import make_optimizer

CONFIG_FILE = "configs/tiny.py"


def tiny_config(**overrides) -> VLMConfig:
    return VLMConfig.from_dict(load_config_file(CONFIG_FILE).model).replace(**overrides)


def loss_options(**overrides) -> GRPOLossOptions:
    # beta > 0 exercises the reference-policy forward; eps small so later steps clip.
    values = dict(beta=0.04, eps_low=0.05, eps_high=0.05, logprob_chunk=8)
    values.update(overrides)
    return GRPOLossOptions(**values)


def optimizer(lr: float = 1e-2):
    # eps=1e-4 rather than 1e-8: with a tiny eps Adam turns a near-zero gradient into a
    # full +-lr step, so rounding noise in such gradients would dominate the comparison.
    return make_optimizer(ml_collections.ConfigDict(dict(
        lr=lr, warmup_steps=0, schedule="constant", total_steps=10, final_lr_ratio=0.1,
        clip_norm=1.0, b1=0.9, b2=0.999, eps=1e-4, weight_decay=0.01)))


def host_batch(config: VLMConfig, num_micro: int = 2, micro: int = 4, seq: int = 24,
               seed: int = 0) -> GRPOBatch:
    """numpy GRPOBatch [num_micro, micro, ...]; old_logps are zeros (fill them by scoring)."""
    rng = np.random.default_rng(seed)
    n = num_micro * micro
    vocab, img = config.text.vocab_size, config.image_token_id
    k = config.num_image_tokens
    ids = np.zeros((n, seq), np.int32)
    attn = np.zeros((n, seq), np.int32)
    comp = np.zeros((n, seq - 1), np.float32)
    for i in range(n):
        prompt_len = 1 + k + int(rng.integers(2, 6))
        total = int(rng.integers(prompt_len + 3, seq + 1))
        row = rng.integers(img + 1, vocab, total)
        row[1:1 + k] = img
        ids[i, :total], attn[i, :total] = row, 1
        comp[i, prompt_len - 1:total - 1] = 1.0
    size = config.vision.image_size
    pixels = rng.normal(size=(n, size, size, config.vision.num_channels)).astype(np.float32)
    adv = rng.normal(size=n).astype(np.float32)
    shape = lambda x: x.reshape((num_micro, micro) + x.shape[1:])
    return GRPOBatch(input_ids=shape(ids), attention_mask=shape(attn), completion_mask=shape(comp),
                     old_logps=np.zeros((num_micro, micro, seq - 1), np.float32),
                     advantages=shape(adv), is_weights=np.ones((num_micro, micro), np.float32),
                     pixel_values=shape(pixels))
