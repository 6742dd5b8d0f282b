"""Teacher-forced scoring: the log-prob the model gives each token of given sequences.

    out[b, t] = log softmax(logits[b, t-1] / temperature)[input_ids[b, t]]   (fp32)

where completion_mask[b, t] = 1, and 0 elsewhere (t = 0 has no prefix: always 0).
Positions skip padding (`default_positions(attention_mask)`), so left- and right-padded
rows score alike. This is the simple full-logits version; the trainer uses the chunked
`r1v2_jax.losses.logprobs.token_logprobs`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from r1v2_jax.models import VLM, VLMConfig


@functools.partial(jax.jit, static_argnames=("config",))
def _score(config: VLMConfig, params, input_ids, pixel_values, attention_mask, completion_mask,
           temperature):
    out = VLM(config).apply({"params": params}, input_ids, pixel_values,
                            attention_mask=attention_mask)
    logp = jax.nn.log_softmax(out.logits[:, :-1].astype(jnp.float32) / temperature, axis=-1)
    picked = jnp.take_along_axis(logp, input_ids[:, 1:, None].astype(jnp.int32), axis=-1)[..., 0]
    picked = jnp.pad(picked, ((0, 0), (1, 0)))
    return jnp.where(completion_mask.astype(bool), picked, 0.0)


def sequence_logprobs(config: VLMConfig, params, input_ids, pixel_values=None,
                      attention_mask=None, completion_mask=None,
                      temperature: float = 1.0) -> jax.Array:
    """Per-token log-probs [B, T] fp32 of `input_ids` (see the module docstring).

    attention_mask / completion_mask default to all ones; completion_mask[:, 0] is ignored.
    """
    if temperature <= 0:
        raise ValueError(f"sequence_logprobs: temperature must be > 0, got {temperature}")
    input_ids = jnp.asarray(input_ids, jnp.int32)
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
    ones = jnp.ones(input_ids.shape, jnp.int32)
    attention_mask = ones if attention_mask is None else jnp.asarray(attention_mask, jnp.int32)
    completion_mask = ones if completion_mask is None else jnp.asarray(completion_mask)
    for name, m in (("attention_mask", attention_mask), ("completion_mask", completion_mask)):
        if m.shape != input_ids.shape:
            raise ValueError(f"{name} must have shape {input_ids.shape}, got {m.shape}")
    if pixel_values is not None:
        pixel_values = jnp.asarray(pixel_values, jnp.float32)
    return _score(config, params, input_ids, pixel_values, attention_mask, completion_mask,
                  jnp.float32(temperature))
