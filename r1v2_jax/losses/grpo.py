"""GRPO-family policy loss with KL penalty, every TRL aggregation, exact accumulation.

Per token (rho = importance weight at `importance_sampling_level`, A = advantage,
d = logp_ref - logp):
    l = policy_loss(rho, A, ...)  default "grpo": -min(rho A, clip(rho, 1-eps_low, 1+eps_high) A)
    dual clip c (grpo, A < 0): l = min(l, -c * A)   (other losses: `policy_losses`)
    high-entropy mask e:       l = e * l
    truncated-IS weight w:     l = w * l          (policy term only, as TRL/Tunix)
    KL: k1 = -d, k2 = d^2 / 2, k3 = exp(d) - d - 1; bias-corrected: kl = rho * kl
    total: l + beta * kl - entropy_coef * H
Aggregation (TRL 1.x `loss_type`), m = completion mask:
    grpo:    mean_b [ sum_t m l / max(sum_t m, 1) ]
    bnpo:    sum m l / max(sum m, 1)                 (this batch's tokens)
    dr_grpo: sum m l / (B * max_completion_length)
    dapo:    sum m l / num_items_in_batch            (active tokens of the global batch)

Reference: TRL 1.x `GRPOTrainer._compute_loss`; Tunix `rl/algo_core.py` `grpo_loss_fn`
(dual clip `epsilon_c`, `sampler_is_weights`). See docs/losses.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1v2_jax.losses._checks import check_choice, check_ndim, check_shape, check_static_float
from r1v2_jax.losses.policy_losses import NEEDS_SELECTION, TOKEN_LEVEL_ONLY, PolicyInputs
from r1v2_jax.losses.registry import POLICY_LOSSES
from r1v2_jax.losses.token_selection import clip_cov_selection, high_entropy_mask, kl_cov_selection

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_estimate(logps: jax.Array, ref_logps: jax.Array, estimator: str) -> jax.Array:
    """Per-token estimate of KL(pi_theta || pi_ref) from samples of pi_theta; d = ref - logp."""
    check_choice("kl_estimate", "estimator", estimator, KL_ESTIMATORS)
    return _kl_from_log_ratio(ref_logps - logps, estimator)


def _kl_from_log_ratio(d: jax.Array, estimator: str) -> jax.Array:
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * jnp.square(d)
    return jnp.exp(d) - d - 1.0


def _per_row_or_token(fn: str, name: str, x: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """Accepts [B] (broadcast over tokens) or [B, T]; returns fp32 [B, 1] or [B, T]."""
    if tuple(x.shape) == shape[:1]:
        return x.astype(jnp.float32)[:, None]
    check_shape(fn, name, x, shape)
    return x.astype(jnp.float32)


IS_LEVELS = ("token", "sequence", "sequence_token")


def _check_options(fn, loss_type, eps_low, eps_high, dual_clip, beta, kl_estimator,
                   kl_bias_correction, max_completion_length, ref_logps, policy_loss,
                   importance_sampling_level, extra):
    check_choice(fn, "loss_type", loss_type, LOSS_TYPES)
    check_choice(fn, "kl_estimator", kl_estimator, KL_ESTIMATORS)
    POLICY_LOSSES.check(policy_loss, f"{fn}: policy_loss")
    check_choice(fn, "importance_sampling_level", importance_sampling_level, IS_LEVELS)
    eps_low = check_static_float(fn, "eps_low", eps_low)
    eps_high = check_static_float(fn, "eps_high", eps_high)
    beta = check_static_float(fn, "beta", beta)
    if not 0.0 <= eps_low < 1.0:
        raise ValueError(f"{fn}: eps_low must be in [0, 1), got {eps_low}")
    if eps_high < 0.0:
        raise ValueError(f"{fn}: eps_high must be >= 0, got {eps_high}")
    if dual_clip is not None and check_static_float(fn, "dual_clip", dual_clip) <= 1.0:
        raise ValueError(f"{fn}: dual_clip must be > 1 (Ye et al. 2020), got {dual_clip}")
    if dual_clip is not None and policy_loss != "grpo":
        raise ValueError(f"{fn}: dual_clip applies to policy_loss='grpo' only, got {policy_loss!r}")
    if policy_loss in TOKEN_LEVEL_ONLY and importance_sampling_level != "token":
        raise ValueError(f"{fn}: policy_loss={policy_loss!r} defines its own ratio; it needs "
                         f"importance_sampling_level='token', got {importance_sampling_level!r}")
    if beta < 0.0:
        raise ValueError(f"{fn}: beta must be >= 0, got {beta}")
    if beta != 0.0 and ref_logps is None:
        raise ValueError(f"{fn}: beta={beta} needs ref_logps (got None)")
    if not isinstance(kl_bias_correction, bool):
        raise ValueError(f"{fn}: kl_bias_correction must be a bool, got {kl_bias_correction!r}")
    for name in ("sapo_temperature_pos", "sapo_temperature_neg", "cispo_max"):
        if check_static_float(fn, name, extra[name]) <= 0.0:
            raise ValueError(f"{fn}: {name} must be > 0, got {extra[name]}")
    for name in ("ppo_kl_coef", "entropy_coef"):
        check_static_float(fn, name, extra[name])
    if loss_type == "dr_grpo" and (
        isinstance(max_completion_length, bool)
        or not isinstance(max_completion_length, int)
        or max_completion_length < 1
    ):
        raise ValueError(
            f"{fn}: loss_type='dr_grpo' needs max_completion_length as a positive Python int, "
            f"got {max_completion_length!r}"
        )
    return eps_low, eps_high, beta


def _log_importance_weights(lp, log_ratio, m, level):
    """TRL importance_sampling_level: token r_t; sequence mean_t r ([B, 1], GSPO);
    sequence_token logp - sg(logp) + sg(mean_t r) (GSPO-token: sequence value, token gradient)."""
    if level == "token":
        return log_ratio
    seq = jnp.sum(log_ratio * m, axis=1, keepdims=True) / jnp.maximum(jnp.sum(m, 1, keepdims=True), 1.0)
    if level == "sequence":
        return seq
    return lp - jax.lax.stop_gradient(lp) + jax.lax.stop_gradient(seq)


def grpo_loss_terms(
    logps: jax.Array,
    old_logps: jax.Array | None,
    ref_logps: jax.Array | None,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    loss_type: str = "grpo",
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    kl_bias_correction: bool = False,
    max_completion_length: int | None = None,
    importance_weights: jax.Array | None = None,
    policy_loss: str = "grpo",
    importance_sampling_level: str = "token",
    sapo_temperature_pos: float = 1.0,
    sapo_temperature_neg: float = 1.05,
    cispo_max: float = 5.0,
    ppo_kl_coef: float = 1.0,
    entropy_coef: float = 0.0,
    entropies: jax.Array | None = None,
    entropy_mask: jax.Array | None = None,
    cov_selection: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """(numerator, denominator, metric_sums) of the GRPO-family loss on one micro-batch.

    Summing numerators and denominators over micro-batches and calling
    `accumulated_loss(sum_num, sum_den)` gives exactly the loss (and, since the
    denominators carry no gradient, the gradient) of the whole batch in one piece:
        grpo:        num = sum_b mean_t(l_b),  den = B   (number of sequences)
        bnpo, dapo:  num = sum m l,            den = sum m (active tokens)
        dr_grpo:     num = sum m l,            den = B * max_completion_length
    metric_sums are sums as well (plus num_tokens / num_sequences); turn the accumulated
    sums into means with `grpo_metrics`.

    logps, old_logps, ref_logps, mask: [B, T]; advantages: [B] (or [B, T]);
    importance_weights: [B] or [B, T] or None. old_logps=None means on-policy
    (old = stop_gradient(logps), rho == 1). old_logps, ref_logps, advantages and
    importance_weights are constants: no gradient flows into them.

    policy_loss: a name in `registry.POLICY_LOSSES` (see `policy_losses`);
    importance_sampling_level: token | sequence (GSPO) | sequence_token (GSPO-token).
    Per token: tot = entropy_mask * w_is * l_policy + beta * kl - entropy_coef * H.
    entropies [B, T] (with gradient) feed the entropy bonus and the `entropy` metric;
    entropy_mask [B, T] (`token_selection.high_entropy_mask`) and cov_selection [B, T]
    (clip_cov / kl_cov, `token_selection`) are batch-level constants: pass the
    micro-batch's slice of the arrays computed on the whole batch.
    """
    fn = "grpo_loss_terms"
    extra = dict(sapo_temperature_pos=sapo_temperature_pos, sapo_temperature_neg=sapo_temperature_neg,
                 cispo_max=cispo_max, ppo_kl_coef=ppo_kl_coef, entropy_coef=entropy_coef)
    eps_low, eps_high, beta = _check_options(
        fn, loss_type, eps_low, eps_high, dual_clip, beta, kl_estimator,
        kl_bias_correction, max_completion_length, ref_logps, policy_loss,
        importance_sampling_level, extra,
    )
    check_ndim(fn, "logps", logps, 2)
    shape = tuple(logps.shape)
    check_shape(fn, "mask", mask, shape)
    for name, x in (("old_logps", old_logps), ("ref_logps", ref_logps), ("entropies", entropies),
                    ("entropy_mask", entropy_mask), ("cov_selection", cov_selection)):
        if x is not None:
            check_shape(fn, name, x, shape)
    if policy_loss in NEEDS_SELECTION and cov_selection is None:
        raise ValueError(f"{fn}: policy_loss={policy_loss!r} needs cov_selection (token_selection."
                         f"{policy_loss}_selection on the whole batch)")
    if entropy_coef != 0.0 and entropies is None:
        raise ValueError(f"{fn}: entropy_coef={entropy_coef} needs entropies (got None)")

    logps = logps.astype(jnp.float32)
    m = mask.astype(jnp.float32)
    valid = m > 0
    old = logps if old_logps is None else old_logps.astype(jnp.float32)
    old = jax.lax.stop_gradient(old)
    adv = jax.lax.stop_gradient(_per_row_or_token(fn, "advantages", advantages, shape))

    # Padding positions may hold garbage log-probs: zero them (and their log-ratio) so exp()
    # cannot overflow into NaN gradients; `where` also gives them exactly zero gradient.
    lp = jnp.where(valid, logps, 0.0)
    log_ratio = jnp.where(valid, logps - old, 0.0)
    log_w = _log_importance_weights(lp, log_ratio, m, importance_sampling_level)
    ratio = jnp.exp(log_w)
    selection = None if cov_selection is None else jax.lax.stop_gradient(cov_selection.astype(jnp.float32))
    inputs = PolicyInputs(log_w, lp, log_ratio, adv, m, selection)
    per_token, is_low, is_high = POLICY_LOSSES.get(policy_loss)(
        inputs, eps_low=eps_low, eps_high=eps_high, dual_clip=dual_clip, **extra)
    if entropy_mask is not None:
        per_token = per_token * jax.lax.stop_gradient(entropy_mask.astype(jnp.float32))
    if importance_weights is not None:
        weights = _per_row_or_token(fn, "importance_weights", importance_weights, shape)
        per_token = per_token * jax.lax.stop_gradient(weights)

    kl = None
    if ref_logps is not None:
        ref = jax.lax.stop_gradient(ref_logps.astype(jnp.float32))
        kl = _kl_from_log_ratio(jnp.where(valid, ref - logps, 0.0), kl_estimator)
        if kl_bias_correction:
            kl = kl * ratio
        if beta != 0.0:
            per_token = per_token + beta * kl
    ent = None
    if entropies is not None:
        ent = jnp.where(valid, entropies.astype(jnp.float32), 0.0)
        if entropy_coef != 0.0:
            per_token = per_token - entropy_coef * ent  # verl: pg_loss - entropy_coeff * entropy

    masked_loss = jnp.where(valid, per_token * m, 0.0)
    batch = shape[0]
    if loss_type == "grpo":
        tokens_per_seq = jnp.maximum(jnp.sum(m, axis=1), 1.0)
        numerator = jnp.sum(jnp.sum(masked_loss, axis=1) / tokens_per_seq)
        denominator = jnp.asarray(batch, jnp.float32)
    elif loss_type == "dr_grpo":
        numerator = jnp.sum(masked_loss)
        denominator = jnp.asarray(batch * max_completion_length, jnp.float32)
    else:  # bnpo, dapo
        numerator = jnp.sum(masked_loss)
        denominator = jnp.sum(m)

    def masked_sum(x: jax.Array) -> jax.Array:
        return jnp.sum(jnp.where(valid, jnp.broadcast_to(x, shape) * m, 0.0))

    def clip_sum(x: jax.Array) -> jax.Array:
        # one ratio per sequence: TRL averages its clip indicators over sequences
        return jnp.sum(x) if x.shape[1] == 1 else masked_sum(x)

    f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
    sums = {
        "clip_low_sum": clip_sum(f32(is_low)),
        "clip_high_sum": clip_sum(f32(is_high)),
        "clip_sum": clip_sum(f32(is_low | is_high)),
        "clip_count": jnp.asarray(batch, jnp.float32) if is_low.shape[1] == 1 else jnp.sum(m),
        "ratio_sum": masked_sum(ratio),
        "neg_logp_sum": masked_sum(-lp),
        "num_tokens": jnp.sum(m),
        "num_sequences": jnp.asarray(batch, jnp.float32),
    }
    if dual_clip is not None:
        # Tunix pg_clipfrac_lower: the cap -c*A is below the clipped loss -A*max(rho, clip(rho)).
        clipped_ratio = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
        is_dual = (adv < 0) & (jnp.maximum(ratio, clipped_ratio) > float(dual_clip))
        sums["dual_clip_sum"] = masked_sum(f32(is_dual))
    if kl is not None:
        sums["kl_sum"] = masked_sum(kl)
    if ent is not None:
        sums["entropy_sum"] = masked_sum(ent)
    if entropy_mask is not None:
        sums["entropy_mask_sum"] = masked_sum(entropy_mask.astype(jnp.float32))
    if selection is not None:
        sums["cov_selected_sum"] = masked_sum(selection)
    return numerator, denominator, jax.lax.stop_gradient(sums)


def accumulated_loss(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """Loss from (summed) terms: numerator / max(denominator, 1), the TRL clamp."""
    return numerator / jnp.maximum(denominator, 1.0)


def grpo_metrics(sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Means from (summed) metric sums of `grpo_loss_terms`.

    clip_frac_low: share of tokens with A < 0 and rho < 1 - eps_low; clip_frac_high: A > 0
    and rho > 1 + eps_high; clip_frac: either (TRL clip_ratio/low, /high, /region; for a
    sequence-level ratio they are shares of sequences, as TRL; cispo: rho > cispo_max and
    A > 0, TRL cispo_clip_ratio; gmpo: clipped log-ratios, verl pg_clipfrac(_lower));
    ratio_mean; kl (the per-token estimator actually penalised, incl. bias correction);
    entropy_proxy = -mean logp; entropy (when entropies are given); dual_clip_frac,
    entropy_mask_frac, cov_selected_frac when those options are on; num_tokens.
    """
    tokens = jnp.maximum(sums["num_tokens"], 1.0)
    clip_count = jnp.maximum(sums.get("clip_count", sums["num_tokens"]), 1.0)
    out = {
        "clip_frac_low": sums["clip_low_sum"] / clip_count,
        "clip_frac_high": sums["clip_high_sum"] / clip_count,
        "clip_frac": sums["clip_sum"] / clip_count,
        "ratio_mean": sums["ratio_sum"] / tokens,
        "entropy_proxy": sums["neg_logp_sum"] / tokens,
        "num_tokens": sums["num_tokens"],
        "num_sequences": sums["num_sequences"],
    }
    for key, name in (("kl_sum", "kl"), ("dual_clip_sum", "dual_clip_frac"), ("entropy_sum", "entropy"),
                      ("entropy_mask_sum", "entropy_mask_frac"), ("cov_selected_sum", "cov_selected_frac")):
        if key in sums:
            out[name] = sums[key] / tokens
    return out


def grpo_loss(
    logps: jax.Array,
    old_logps: jax.Array | None,
    ref_logps: jax.Array | None,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    loss_type: str = "grpo",
    num_items_in_batch: jax.Array | float | None = None,
    top_entropy_quantile: float = 1.0,
    clip_cov_ratio: float = 2e-4,
    clip_cov_lb: float = 1.0,
    clip_cov_ub: float = 5.0,
    kl_cov_ratio: float = 2e-4,
    cov_priority: jax.Array | None = None,
    **options,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(loss, metrics) of one whole batch; `options` as `grpo_loss_terms`, metrics as
    `grpo_metrics`.

    The batch-level selections are computed here from this batch when not passed:
    top_entropy_quantile < 1 (TRL) -> entropy_mask from `entropies`; policy_loss clip_cov /
    kl_cov -> cov_selection from logps (verl clip_cov_ratio / clip_cov_lb / clip_cov_ub /
    kl_cov_ratio; cov_priority: see `token_selection.clip_cov_selection`).

    num_items_in_batch (dapo only, TRL's argument): the active-token count of the whole
    global batch when this call sees one micro-batch; the loss is then sum m l /
    num_items_in_batch and the micro-batch losses add up to the global one. Default: the
    tokens of this batch.
    """
    policy_loss = options.get("policy_loss", "grpo")
    if top_entropy_quantile < 1.0 and options.get("entropy_mask") is None:
        if options.get("entropies") is None:
            raise ValueError("grpo_loss: top_entropy_quantile < 1 needs entropies (got None)")
        options["entropy_mask"] = high_entropy_mask(options["entropies"], mask, top_entropy_quantile)
    if options.get("cov_selection") is None and policy_loss == "clip_cov":
        options["cov_selection"] = clip_cov_selection(
            logps, old_logps, advantages, mask, eps_low=options.get("eps_low", 0.2),
            eps_high=options.get("eps_high", 0.2), clip_cov_ratio=clip_cov_ratio,
            clip_cov_lb=clip_cov_lb, clip_cov_ub=clip_cov_ub, priority=cov_priority)
    elif options.get("cov_selection") is None and policy_loss == "kl_cov":
        options["cov_selection"] = kl_cov_selection(logps, advantages, mask, kl_cov_ratio=kl_cov_ratio)
    numerator, denominator, sums = grpo_loss_terms(
        logps, old_logps, ref_logps, advantages, mask, loss_type=loss_type, **options)
    if num_items_in_batch is not None:
        if loss_type != "dapo":
            raise ValueError(
                f"grpo_loss: num_items_in_batch is only used by loss_type='dapo', got {loss_type!r}"
            )
        denominator = jax.lax.stop_gradient(jnp.asarray(num_items_in_batch, jnp.float32))
    return accumulated_loss(numerator, denominator), grpo_metrics(sums)
