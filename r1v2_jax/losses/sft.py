"""Token-level negative log-likelihood (SFT / MPO generation term)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1v2_jax.losses._checks import check_ndim, check_shape


def sft_loss(
    logps: jax.Array,
    mask: jax.Array,
    *,
    num_items_in_batch: jax.Array | float | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean NLL over all masked tokens of the batch: -sum(m * logp) / max(sum m, 1).

    logps, mask: [B, T] (token log-probs of the targets, completion mask). This is
    cross-entropy with ignored padding, as TRL's DPO `nll_loss` and InternVL's MPO
    generation term compute it (a token mean over the batch, not a mean of sequence
    means). With gradient accumulation pass num_items_in_batch = the token count of the
    whole batch; the micro-batch losses then add up to the batch loss.
    metrics: nll (the token mean on this batch), num_tokens.
    """
    fn = "sft_loss"
    check_ndim(fn, "logps", logps, 2)
    check_shape(fn, "mask", mask, logps.shape)
    m = mask.astype(jnp.float32)
    valid = m > 0
    nll_sum = -jnp.sum(jnp.where(valid, logps.astype(jnp.float32) * m, 0.0))
    num_tokens = jnp.sum(m)
    if num_items_in_batch is None:
        denominator = num_tokens
    else:
        denominator = jax.lax.stop_gradient(jnp.asarray(num_items_in_batch, jnp.float32))
    loss = nll_sum / jnp.maximum(denominator, 1.0)
    metrics = {
        "nll": jax.lax.stop_gradient(nll_sum / jnp.maximum(num_tokens, 1.0)),
        "num_tokens": num_tokens,
    }
    return loss, metrics
