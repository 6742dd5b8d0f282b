"""Jitted pieces every trainer shares: policy log-probs, gradient accumulation over
micro-batches with exact (numerator, denominator) bookkeeping, and the optimizer update
that skips non-finite steps."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from r1v2_jax.losses import token_logprobs
from r1v2_jax.models import VLM, VLMConfig, lm_head_kernel
from r1v2_jax.train.masks import merge_params


def cast_tree(tree: Any, dtype) -> Any:
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                        tree)


def sequence_token_logps(config: VLMConfig, params: Any, input_ids, attention_mask,
                         pixel_values=None, *, temperature: float = 1.0,
                         chunk_size: int = 512) -> jax.Array:
    """fp32 log p(input_ids[:, t+1] | ...) for t in [0, T-1): shape [B, T-1].

    The vocabulary projection is chunked (`losses.token_logprobs`), so no [B, T, V] fp32
    array is materialised.
    """
    out = VLM(config).apply({"params": params}, input_ids, pixel_values,
                            attention_mask=attention_mask, return_logits=False)
    kernel = lm_head_kernel(config, params).astype(config.jnp_dtype)
    return token_logprobs(out.hidden[:, :-1], kernel, input_ids[:, 1:],
                          temperature=temperature, chunk_size=chunk_size)


LossTerms = Callable[[Any, Any], tuple[jax.Array, jax.Array, dict[str, jax.Array]]]


def accumulate(loss_terms: LossTerms, trainable: Any, micro_batches: Any):
    """Sums (numerator, gradient of numerator, denominator, metric sums) over the leading
    micro-batch axis of `micro_batches` with lax.scan; returns the big-batch loss and
    gradient: loss = sum num / max(sum den, 1), grad = sum d(num) / max(sum den, 1).

    loss_terms(trainable, micro_batch) -> (numerator, denominator, metric_sums); the
    denominator must not depend on the parameters.
    """
    grad_fn = jax.value_and_grad(lambda p, mb: _num_only(loss_terms, p, mb), has_aux=True)

    def body(carry, mb):
        g_acc, num_acc, den_acc, sums_acc = carry
        (num, (den, sums)), g = grad_fn(trainable, mb)
        g_acc = jax.tree.map(jnp.add, g_acc, g)
        sums_acc = jax.tree.map(jnp.add, sums_acc, sums)
        return (g_acc, num_acc + num, den_acc + den, sums_acc), None

    first = jax.tree.map(lambda x: x[0], micro_batches)
    _, (_, sums_shape) = jax.eval_shape(lambda p, mb: _num_only(loss_terms, p, mb), trainable, first)
    zeros = lambda t: jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), t)
    init = (jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), trainable),
            jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), zeros(sums_shape))
    (grads, num, den, sums), _ = jax.lax.scan(body, init, micro_batches)
    scale = 1.0 / jnp.maximum(den, 1.0)
    return num * scale, jax.tree.map(lambda g: g * scale, grads), sums


def _num_only(loss_terms, params, mb):
    num, den, sums = loss_terms(params, mb)
    return num, (jax.lax.stop_gradient(den), sums)


def apply_update(optimizer: optax.GradientTransformation, trainable, opt_state, grads, loss):
    """One optimizer step, skipped (params and state unchanged) when the loss or any
    gradient is non-finite. Returns (trainable, opt_state, metrics)."""
    finite = jnp.isfinite(loss) & jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    safe_grads = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grads)
    grads_cast = jax.tree.map(lambda g, p: g.astype(p.dtype), safe_grads, trainable)
    updates, new_state = optimizer.update(grads_cast, opt_state, trainable)
    new_params = optax.apply_updates(trainable, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    metrics = {"grad_norm": optax.tree.norm(safe_grads), "skipped": 1.0 - finite.astype(jnp.float32)}
    return keep(new_params, trainable), keep(new_state, opt_state), metrics


def merged(trainable, frozen, compute_dtype=None):
    """Full parameter tree for a forward pass (trainable parts cast to the param dtype when
    fp32 master weights are kept)."""
    if compute_dtype is not None:
        trainable = cast_tree(trainable, compute_dtype)
    return merge_params(trainable, frozen)
