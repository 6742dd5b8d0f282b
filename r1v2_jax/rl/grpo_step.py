"""The GRPO update step (device side): micro-batched policy-gradient update with the GRPO
loss family (any registered policy loss, importance-sampling level, entropy bonus /
high-entropy mask), KL to the reference policy and importance weights (replayed samples,
rollout correction).

Batch-level token selections (high-entropy mask, Clip-Cov / KL-Cov) are computed once per
update from a gradient-free pass over all micro-batches, then sliced per micro-batch, so
accumulation stays exact.

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

from r1v2_jax.losses import (
    ADVANTAGE_ESTIMATORS,
    POLICY_LOSSES,
    ROLLOUT_CORRECTIONS,
    clip_cov_selection,
    grpo_loss_terms,
    grpo_metrics,
    high_entropy_mask,
    kl_cov_selection,
    token_logprobs,
)
from r1v2_jax.models import VLM, VLMConfig, lm_head_kernel
from r1v2_jax.train.steps import accumulate, apply_update, merged, sequence_token_logps


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class GRPOBatch:
    """One update batch, split into micro-batches on the leading axis.

    input_ids, attention_mask: [M, b, T] prompt + completion tokens;
    completion_mask: [M, b, T-1] 1 where the *target* token t+1 is a completion token in
    the loss (truncated completions and rejected tokens are 0: `batching.grpo_batch`
    loss_mask; every denominator, the KL and the selections see this mask);
    old_logps: [M, b, T-1] behaviour/old log-probs aligned with completion_mask;
    advantages: [M, b]; is_weights: [M, b] (per sequence) or [M, b, T-1] (per token);
    pixel_values: [M, tiles, H, W, 3] or None.
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
    # second edition (docs/losses.md); the defaults reproduce the plain GRPO loss
    policy_loss: str = "grpo"
    importance_sampling_level: str = "token"
    sapo_temperature_pos: float = 1.0
    sapo_temperature_neg: float = 1.05
    cispo_max: float = 5.0
    ppo_kl_coef: float = 1.0
    clip_cov_ratio: float = 2e-4
    clip_cov_lb: float = 1.0
    clip_cov_ub: float = 5.0
    kl_cov_ratio: float = 2e-4
    entropy_coef: float = 0.0
    top_entropy_quantile: float = 1.0
    apply_is_weights: bool = False  # rollout correction / masked truncated: always use is_weights

    @classmethod
    def from_config(cls, grpo_cfg, temperature: float, max_completion_length: int):
        validate_grpo_config(grpo_cfg)
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in dict(grpo_cfg).items() if k in names}
        values.update(temperature=float(temperature), max_completion_length=int(max_completion_length),
                      apply_is_weights=rollout_correction_enabled(grpo_cfg))
        return cls(**values)

    @property
    def needs_entropy(self) -> bool:
        return self.entropy_coef != 0.0 or self.top_entropy_quantile < 1.0


ROLLOUT_CORRECTION_KEYS = {"is_level", "is_threshold", "is_mode", "rs_level", "rs_threshold",
                           "rs_threshold_lower"}
DYNAMIC_SAMPLING_KEYS = {"enabled", "max_rounds", "metric"}
OVERLONG_KEYS = {"enabled", "buffer_len", "penalty_factor"}


def _section(grpo_cfg, name: str, keys: set[str]) -> dict:
    section = dict(grpo_cfg.get(name) or {})
    unknown = set(section) - keys
    if unknown:
        raise ValueError(f"config.grpo.{name}: unknown keys {sorted(unknown)}; known: {sorted(keys)}")
    return section


def rollout_correction_enabled(grpo_cfg) -> bool:
    rc = _section(grpo_cfg, "rollout_correction", ROLLOUT_CORRECTION_KEYS)
    return rc.get("is_level") is not None or rc.get("rs_level") is not None


def validate_grpo_config(grpo_cfg) -> None:
    """Names are checked against the registries; an unknown one lists the registered ones."""
    g = dict(grpo_cfg)
    POLICY_LOSSES.check(g.get("policy_loss", "grpo"), "config.grpo.policy_loss")
    ADVANTAGE_ESTIMATORS.check(g.get("advantage_estimator", "grpo"), "config.grpo.advantage_estimator")
    rc = _section(grpo_cfg, "rollout_correction", ROLLOUT_CORRECTION_KEYS)
    for key in ("is_level", "rs_level"):
        if rc.get(key) is not None:
            ROLLOUT_CORRECTIONS.check(rc[key], f"config.grpo.rollout_correction.{key}")
    ds = _section(grpo_cfg, "dynamic_sampling", DYNAMIC_SAMPLING_KEYS)
    if ds.get("metric", "reward") not in ("reward", "accuracy"):
        raise ValueError(f"config.grpo.dynamic_sampling.metric must be 'reward' or 'accuracy', "
                         f"got {ds['metric']!r}")
    if int(ds.get("max_rounds", 1)) < 1:
        raise ValueError(f"config.grpo.dynamic_sampling.max_rounds must be >= 1, got {ds['max_rounds']}")
    ov = _section(grpo_cfg, "overlong", OVERLONG_KEYS)
    if ov.get("enabled") and int(ov.get("buffer_len", 0)) < 1:
        raise ValueError("config.grpo.overlong.buffer_len must be >= 1 when overlong.enabled")


def _logps(config: VLMConfig, opts: GRPOLossOptions, params, mb: GRPOBatch, entropy: bool):
    if not entropy:
        return sequence_token_logps(config, params, mb.input_ids, mb.attention_mask, mb.pixel_values,
                                    temperature=opts.temperature, chunk_size=opts.logprob_chunk), None
    out = VLM(config).apply({"params": params}, mb.input_ids, mb.pixel_values,
                            attention_mask=mb.attention_mask, return_logits=False)
    kernel = lm_head_kernel(config, params).astype(config.jnp_dtype)
    return token_logprobs(out.hidden[:, :-1], kernel, mb.input_ids[:, 1:], temperature=opts.temperature,
                          chunk_size=opts.logprob_chunk, return_entropy=True)


def grpo_terms(config: VLMConfig, opts: GRPOLossOptions, frozen, ref_trainable, compute_dtype,
               trainable, mb: GRPOBatch, selections=None):
    params = merged(trainable, frozen, compute_dtype)
    logps, entropies = _logps(config, opts, params, mb, opts.needs_entropy)
    ref_logps = None
    if opts.beta != 0.0 or opts.track_kl:
        ref_params = merged(ref_trainable, frozen, compute_dtype)
        ref_logps = jax.lax.stop_gradient(sequence_token_logps(
            config, ref_params, mb.input_ids, mb.attention_mask, mb.pixel_values,
            temperature=opts.temperature, chunk_size=opts.logprob_chunk))
    use_weights = opts.use_is_weights or opts.apply_is_weights
    return grpo_loss_terms(
        logps, mb.old_logps if opts.use_old_logps else None, ref_logps, mb.advantages,
        mb.completion_mask, loss_type=opts.loss_type, eps_low=opts.eps_low, eps_high=opts.eps_high,
        dual_clip=opts.dual_clip, beta=opts.beta, kl_estimator=opts.kl_estimator,
        kl_bias_correction=opts.kl_bias_correction,
        max_completion_length=opts.max_completion_length,
        importance_weights=mb.is_weights if use_weights else None,
        policy_loss=opts.policy_loss, importance_sampling_level=opts.importance_sampling_level,
        sapo_temperature_pos=opts.sapo_temperature_pos, sapo_temperature_neg=opts.sapo_temperature_neg,
        cispo_max=opts.cispo_max, ppo_kl_coef=opts.ppo_kl_coef, entropy_coef=opts.entropy_coef,
        entropies=entropies, **(selections or {}))


def batch_selections(config: VLMConfig, opts: GRPOLossOptions, frozen, compute_dtype, trainable,
                     batch: GRPOBatch) -> dict[str, jax.Array]:
    """The whole update batch's token selections ([M, b, T-1] each), from one gradient-free
    pass over its micro-batches; empty when no option needs one."""
    cov = opts.policy_loss in ("clip_cov", "kl_cov")
    entropy = opts.top_entropy_quantile < 1.0
    if not (cov or entropy):
        return {}
    params = merged(jax.lax.stop_gradient(trainable), frozen, compute_dtype)
    logps, ent = jax.lax.map(lambda mb: _logps(config, opts, params, mb, entropy), batch)
    flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731
    lp, mask, adv = flat(logps), flat(batch.completion_mask), flat(batch.advantages)
    out = {}
    if entropy:
        out["entropy_mask"] = high_entropy_mask(flat(ent), mask, opts.top_entropy_quantile)
    if opts.policy_loss == "clip_cov":
        old = flat(batch.old_logps) if opts.use_old_logps else None
        out["cov_selection"] = clip_cov_selection(
            lp, old, adv, mask, eps_low=opts.eps_low, eps_high=opts.eps_high,
            clip_cov_ratio=opts.clip_cov_ratio, clip_cov_lb=opts.clip_cov_lb, clip_cov_ub=opts.clip_cov_ub)
    elif opts.policy_loss == "kl_cov":
        out["cov_selection"] = kl_cov_selection(lp, adv, mask, kl_cov_ratio=opts.kl_cov_ratio)
    return {k: v.reshape(logps.shape) for k, v in out.items()}


def grpo_update(config: VLMConfig, opts: GRPOLossOptions, optimizer: optax.GradientTransformation,
                frozen, ref_trainable, trainable, opt_state, batch: GRPOBatch, compute_dtype=None):
    """Pure update: returns (trainable, opt_state, metrics)."""
    selections = batch_selections(config, opts, frozen, compute_dtype, trainable, batch)
    terms = functools.partial(grpo_terms, config, opts, frozen, ref_trainable, compute_dtype)
    loss, grads, sums = accumulate(lambda p, mb: terms(p, mb[0], mb[1]), trainable, (batch, selections))
    trainable, opt_state, upd = apply_update(optimizer, trainable, opt_state, grads, loss)
    metrics = {"loss": loss, **grpo_metrics(sums), **upd}
    return trainable, opt_state, metrics


def make_grpo_update(config: VLMConfig, opts: GRPOLossOptions, optimizer, *, compute_dtype=None,
                     donate: bool = True, mesh=None, rules=None, state_shardings=None):
    """The compiled `grpo_update` (`sharding.compile_update`): frozen / ref params explicit,
    non-donated arguments; trainable params and optimizer state donated and, on a mesh,
    pinned to `state_shardings` = (trainable shardings, optimizer-state shardings).
    (frozen, ref_trainable, trainable, opt_state, batch) -> (trainable, opt_state, metrics)."""
    from r1v2_jax.sharding import compile_update

    fn = functools.partial(grpo_update, config, opts, optimizer, compute_dtype=compute_dtype)
    return compile_update(fn, mesh=mesh, rules=rules, state_shardings=state_shardings,
                          donate_argnums=(2, 3) if donate else ())


def sharded_grpo_update(config, opts, optimizer, mesh, rules, trainable_shardings,
                        opt_state_shardings, *, compute_dtype=None, donate: bool = True):
    """`make_grpo_update` on a mesh (the planner's and the multi-host tests' spelling)."""
    return make_grpo_update(config, opts, optimizer, compute_dtype=compute_dtype, donate=donate,
                            mesh=mesh, rules=rules,
                            state_shardings=(trainable_shardings, opt_state_shardings))


def make_score_fn(config: VLMConfig, temperature: float, chunk: int = 512):
    """jit: (params, input_ids, attention_mask, pixel_values) -> token log-probs [B, T-1]."""
    return jax.jit(functools.partial(_score, config, temperature, chunk))


def _score(config, temperature, chunk, params, input_ids, attention_mask, pixel_values):
    return sequence_token_logps(config, params, input_ids, attention_mask, pixel_values,
                                temperature=temperature, chunk_size=chunk)
