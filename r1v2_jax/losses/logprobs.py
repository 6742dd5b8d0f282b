"""Token log-probabilities and entropies, in fp32.

`token_logprobs` goes straight from the final hidden states and the LM head kernel to
log p(target), one sequence chunk at a time, so the [B, T, V] fp32 logits of a 152k
vocabulary never exist at once, neither in the forward nor in the backward pass (each
chunk is rematerialised under `jax.checkpoint`).

Temperature divides the logits before the log-softmax, as TRL's
`GRPOTrainer._get_per_token_logps_and_entropies` and Tunix `compute_per_token_logps` do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1v2_jax.losses._checks import check_ndim, check_shape, check_static_float


def _scaled_fp32(logits: jax.Array, temperature: float, fn: str) -> jax.Array:
    temperature = check_static_float(fn, "temperature", temperature)
    if temperature <= 0.0:
        raise ValueError(f"{fn}: temperature must be > 0, got {temperature}")
    return logits.astype(jnp.float32) / temperature


def _target_logp_and_entropy(
    x: jax.Array, targets: jax.Array, with_entropy: bool
) -> tuple[jax.Array, jax.Array | None]:
    """x: temperature-scaled fp32 logits [..., V]. Returns log p(target) and H(p), both [...]."""
    lse = jax.nn.logsumexp(x, axis=-1)
    target_logit = jnp.take_along_axis(x, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    entropy = None
    if with_entropy:
        # -sum p log p directly: lse - sum p x cancels badly in fp32 for peaked p
        logp = x - lse[..., None]
        entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    return target_logit - lse, entropy


def logprobs_from_logits(
    logits: jax.Array, targets: jax.Array, temperature: float = 1.0
) -> jax.Array:
    """log softmax(logits / temperature)[target] in fp32.

    logits [..., V] (any float dtype), targets [...] int -> [...] fp32.
    """
    x = _scaled_fp32(logits, temperature, "logprobs_from_logits")
    check_shape("logprobs_from_logits", "targets", targets, x.shape[:-1])
    target_logit = jnp.take_along_axis(x, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return target_logit - jax.nn.logsumexp(x, axis=-1)


def entropy_from_logits(logits: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Entropy of softmax(logits / temperature) over the last axis, fp32: -sum_v p_v log p_v."""
    x = _scaled_fp32(logits, temperature, "entropy_from_logits")
    logp = jax.nn.log_softmax(x, axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def token_logprobs(
    hidden: jax.Array,
    lm_head_kernel: jax.Array,
    targets: jax.Array,
    *,
    temperature: float = 1.0,
    chunk_size: int = 512,
    return_entropy: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Memory-efficient log p(target) from final hidden states.

    hidden [B, T, E], lm_head_kernel [E, V], targets [B, T] int.
    For each chunk of `chunk_size` positions: logits = hidden @ kernel accumulated in fp32,
    divided by `temperature`, log-softmax in fp32, gather the target. Chunks run under
    `lax.map` with `jax.checkpoint`, so peak memory holds one [B, chunk_size, V] fp32 block;
    T need not be a multiple of chunk_size (the tail is padded and dropped).

    Returns logps [B, T] fp32, or (logps, entropy) both [B, T] fp32 if `return_entropy`.
    """
    fn = "token_logprobs"
    check_ndim(fn, "hidden", hidden, 3)
    check_ndim(fn, "lm_head_kernel", lm_head_kernel, 2)
    batch, length, embed = hidden.shape
    if lm_head_kernel.shape[0] != embed:
        raise ValueError(
            f"{fn}: lm_head_kernel must be [E={embed}, V], got {tuple(lm_head_kernel.shape)}"
        )
    check_shape(fn, "targets", targets, (batch, length))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{fn}: chunk_size must be a positive Python int, got {chunk_size!r}")
    temperature = check_static_float(fn, "temperature", temperature)
    if temperature <= 0.0:
        raise ValueError(f"{fn}: temperature must be > 0, got {temperature}")

    chunk = min(chunk_size, length)
    num_chunks = -(-length // chunk)
    pad = num_chunks * chunk - length
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets.astype(jnp.int32), ((0, 0), (0, pad)))
    # [num_chunks, B, chunk, ...]: chunk along the sequence so a batch sharding is kept.
    hidden_chunks = hidden.reshape(batch, num_chunks, chunk, embed).swapaxes(0, 1)
    target_chunks = targets.reshape(batch, num_chunks, chunk).swapaxes(0, 1)

    @jax.checkpoint
    def one_chunk(xs):
        h, t = xs
        # One 2-D matmul [B*chunk, E] x [E, V]: XLA's CPU backend runs the 3-D einsum's
        # forward + backward ~2.5x slower (its weight gradient contracts two axes).
        logits = jnp.dot(h.reshape(-1, embed), lm_head_kernel,
                         preferred_element_type=jnp.float32).reshape(h.shape[:2] + (-1,))
        return _target_logp_and_entropy(logits / temperature, t, return_entropy)

    logps, entropy = jax.lax.map(one_chunk, (hidden_chunks, target_chunks))

    def unchunk(x: jax.Array) -> jax.Array:
        return x.swapaxes(0, 1).reshape(batch, num_chunks * chunk)[:, :length]

    if return_entropy:
        return unchunk(logps), unchunk(entropy)
    return unchunk(logps)
