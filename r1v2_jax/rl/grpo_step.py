"""The GRPO update step (device side): micro-batched policy-gradient update with the GRPO
loss family, KL to the reference policy and truncated importance weights for replayed
samples.

Host code packs an update batch into `GRPOBatch` arrays of static shape
[num_micro, micro, ...]; `make_grpo_update` returns a jitted function
(trainable, opt_state, batch) -> (trainable, opt_state, metrics) that closes over the
frozen parameters and the reference copy of the trainable part.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import optax

from r1v2_jax.losses import grpo_loss_terms, grpo_metrics
from r1v2_jax.models import VLMConfig
from r1v2_jax.train.steps import accumulate, apply_update, merged, sequence_token_logps


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class GRPOBatch:
    """One update batch, split into micro-batches on the leading axis.

    input_ids, attention_mask: [M, b, T] prompt + completion tokens;
    completion_mask: [M, b, T-1] 1 where the *target* token t+1 is a completion token;
    old_logps: [M, b, T-1] behaviour/old log-probs aligned with completion_mask;
    advantages, is_weights: [M, b]; pixel_values: [M, tiles, H, W, 3] or None.
    """

    input_ids: jax.Array
    attention_mask: jax.Array
    completion_mask: jax.Array
    old_logps: jax.Array
    advantages: jax.Array
    is_weights: jax.Array
    pixel_values: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class GRPOLossOptions:
    """Static options of the loss (TRL names). `use_old_logps=False` means on-policy:
    old = stop_gradient(current) so rho == 1 exactly (first update of a fresh rollout)."""

    loss_type: str = "grpo"
    eps_low: float = 0.2
    eps_high: float = 0.2
    dual_clip: float | None = None
    beta: float = 0.0
    kl_estimator: str = "k3"
    kl_bias_correction: bool = False
    track_kl: bool = False  # compute the `kl` metric even when beta == 0 (no gradient)
    max_completion_length: int | None = None
    temperature: float = 1.0
    use_old_logps: bool = True
    use_is_weights: bool = False
    logprob_chunk: int = 512

    @classmethod
    def from_config(cls, grpo_cfg, temperature: float, max_completion_length: int):
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in dict(grpo_cfg).items() if k in names}
        values.update(temperature=float(temperature), max_completion_length=int(max_completion_length))
        return cls(**values)


def grpo_terms(config: VLMConfig, opts: GRPOLossOptions, frozen, ref_trainable, compute_dtype,
               trainable, mb: GRPOBatch):
    params = merged(trainable, frozen, compute_dtype)
    logps = sequence_token_logps(config, params, mb.input_ids, mb.attention_mask, mb.pixel_values,
                                 temperature=opts.temperature, chunk_size=opts.logprob_chunk)
    ref_logps = None
    if opts.beta != 0.0 or opts.track_kl:
        ref_params = merged(ref_trainable, frozen, compute_dtype)
        ref_logps = jax.lax.stop_gradient(sequence_token_logps(
            config, ref_params, mb.input_ids, mb.attention_mask, mb.pixel_values,
            temperature=opts.temperature, chunk_size=opts.logprob_chunk))
    return grpo_loss_terms(
        logps, mb.old_logps if opts.use_old_logps else None, ref_logps, mb.advantages,
        mb.completion_mask, loss_type=opts.loss_type, eps_low=opts.eps_low, eps_high=opts.eps_high,
        dual_clip=opts.dual_clip, beta=opts.beta, kl_estimator=opts.kl_estimator,
        kl_bias_correction=opts.kl_bias_correction,
        max_completion_length=opts.max_completion_length,
        importance_weights=mb.is_weights if opts.use_is_weights else None)


def grpo_update(config: VLMConfig, opts: GRPOLossOptions, optimizer: optax.GradientTransformation,
                frozen, ref_trainable, trainable, opt_state, batch: GRPOBatch, compute_dtype=None):
    """Pure update: returns (trainable, opt_state, metrics)."""
    terms = functools.partial(grpo_terms, config, opts, frozen, ref_trainable, compute_dtype)
    loss, grads, sums = accumulate(terms, trainable, batch)
    trainable, opt_state, upd = apply_update(optimizer, trainable, opt_state, grads, loss)
    metrics = {"loss": loss, **grpo_metrics(sums), **upd}
    return trainable, opt_state, metrics


def make_grpo_update(config: VLMConfig, opts: GRPOLossOptions, optimizer, *, compute_dtype=None,
                     donate: bool = True):
    """jit of `grpo_update` with frozen / ref params as explicit (non-donated) arguments."""
    fn = functools.partial(grpo_update, config, opts, optimizer, compute_dtype=compute_dtype)
    return jax.jit(fn, donate_argnums=(2, 3) if donate else ())


def make_score_fn(config: VLMConfig, temperature: float, chunk: int = 512):
    """jit: (params, input_ids, attention_mask, pixel_values) -> token log-probs [B, T-1]."""
    return jax.jit(functools.partial(_score, config, temperature, chunk))


def _score(config, temperature, chunk, params, input_ids, attention_mask, pixel_values):
    return sequence_token_logps(config, params, input_ids, attention_mask, pixel_values,
                                temperature=temperature, chunk_size=chunk)
