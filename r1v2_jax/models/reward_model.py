"""The reward model r_theta: the R1V2 VLM with a scalar value head on the last real token
(Skywork-VL Reward's design: s(x, y) = w . h_last + b, trained Bradley-Terry).

The parameter tree is the VLM's (docs/PARAMS.md, the LM head included, unused) plus one
top-level part:
    value_head/kernel [E, 1], value_head/bias [1]
so the trainable-part masks of `train/masks.py` apply unchanged (the value head is always
trainable) and orbax saves the head with the rest of the tree. HF export:
`r1v2_jax/convert/value_head.py`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1v2_jax.models.config import VLMConfig
from r1v2_jax.models.layers import param_with_axes
from r1v2_jax.models.vlm import VLM, init_params

VALUE_HEAD = "value_head"


def last_token_index(attention_mask: jax.Array) -> jax.Array:
    """Index of the last 1 in each row of `attention_mask` [B, T] (left or right padding);
    0 for a row without any real token."""
    t = attention_mask.shape[-1]
    from_end = jnp.argmax(jnp.flip(attention_mask.astype(jnp.int32), axis=-1), axis=-1)
    any_real = jnp.any(attention_mask > 0, axis=-1)
    return jnp.where(any_real, t - 1 - from_end, 0).astype(jnp.int32)


class ValueHead(nn.Module):
    """[..., E] -> [...] in fp32 (the score is a log-odds: keep it out of bf16)."""

    param_dtype: Any = jnp.float32
    init_std: float = 0.02

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        kernel = param_with_axes(self, "kernel", nn.initializers.normal(self.init_std),
                                 (h.shape[-1], 1), self.param_dtype, ("embed", None))
        bias = param_with_axes(self, "bias", nn.initializers.zeros, (1,), self.param_dtype,
                               (None,))
        out = jnp.einsum("...e,eo->...o", h.astype(jnp.float32), kernel.astype(jnp.float32))
        return (out + bias.astype(jnp.float32))[..., 0]


class RewardModel(VLM):
    """VLM backbone (same submodule names, so the same parameter tree) + value head.

    __call__(input_ids [B, T], pixel_values, *, attention_mask) -> scores fp32 [B]: the
    head applied to the final-norm hidden state of each row's last real token.
    """

    head_init_std: float = 0.02

    def setup(self):
        super().setup()
        self.value_head = ValueHead(self.config.jnp_param_dtype, self.head_init_std,
                                    name=VALUE_HEAD)

    # A different signature from VLM.__call__ on purpose: a reward model only scores.
    def __call__(self, input_ids, pixel_values=None, *, attention_mask=None):  # type: ignore
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        out = super().__call__(input_ids, pixel_values, attention_mask=attention_mask,
                               return_logits=False)
        last = last_token_index(attention_mask)
        h = jnp.take_along_axis(out.hidden, last[:, None, None], axis=1)[:, 0]
        return self.value_head(h)


def reward_scores(config: VLMConfig, params, input_ids, attention_mask, pixel_values=None):
    """Pure scoring function: fp32 [B]."""
    return RewardModel(config).apply({"params": params}, input_ids, pixel_values,
                                     attention_mask=attention_mask)


def init_value_head(config: VLMConfig, rng: jax.Array, init_std: float = 0.02) -> dict:
    """{'kernel': [E, 1] ~ N(0, init_std^2), 'bias': [1] = 0}."""
    h = jnp.zeros((1, config.text.hidden_size), config.jnp_param_dtype)
    variables = ValueHead(config.jnp_param_dtype, init_std).init(rng, h)
    return nn.meta.unbox(variables["params"])


def init_reward_model_params(config: VLMConfig, rng: jax.Array, base_params=None, *,
                             head_init_std: float = 0.02) -> dict:
    """VLM params (`base_params`, e.g. the policy, or a fresh init) + a fresh value head.

    The base tree is not copied: JAX arrays are immutable, and the trainers replace (never
    mutate) them.
    """
    backbone_rng, head_rng = jax.random.split(rng)
    if base_params is None:
        base_params = init_params(config, backbone_rng)
    if VALUE_HEAD in base_params:
        raise ValueError("init_reward_model_params: base_params already has a value_head")
    return {**base_params, VALUE_HEAD: init_value_head(config, head_rng, head_init_std)}


def split_value_head(rm_params: dict) -> tuple[dict, dict]:
    """rm params -> (VLM params, value head)."""
    if VALUE_HEAD not in rm_params:
        raise KeyError(f"reward-model params have no '{VALUE_HEAD}' part; has {sorted(rm_params)}")
    return {k: v for k, v in rm_params.items() if k != VALUE_HEAD}, rm_params[VALUE_HEAD]
