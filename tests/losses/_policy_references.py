"""Second-edition references re-expressed in PyTorch (float64) from the named sources.

- trl_policy_loss: TRL 1.x `GRPOTrainer._compute_loss` with importance_sampling_level
  token / sequence / sequence_token, loss_type grpo-family / "cispo" / "sapo"
  (`get_sapo_token_loss`), the entropy mask, the vLLM importance-sampling ratio and the k3
  KL; the aggregation is chosen separately (TRL ties it to loss_type: cispo -> dapo, sapo
  -> grpo), one process, no accumulation. `cispo_max` is TRL's `epsilon_high` for cispo.
- verl_policy_matrix: verl `core_algos.py` compute_policy_loss_{geo_mean, clip_cov, kl_cov}
  up to `agg_loss` (the per-token matrix; geo_mean's per-sequence loss as [B, 1]); clip_cov's
  `torch.randperm` is replaced by the order of a given `priority` array.
- aggregate: TRL's four loss_type normalisations (= verl seq-mean-token-mean, token-mean,
  seq-mean-token-sum-norm with max_completion_length, and token-mean over the global batch).
- verl_entropy_bonus: `pg_loss - entropy_coeff * agg_loss(entropy)`.
- verl_rollout_correction: rollout_corr_helper compute_rollout_correction_weights /
  compute_rollout_rejection_mask / compute_is_metrics, plus TRL's *_mask IS modes.
- verl_rloo, verl_reinforce_pp_baseline: compute_rloo_outcome_advantage,
  compute_reinforce_plus_plus_baseline_outcome_advantage (masked_whiten over tokens).
"""

from __future__ import annotations

import torch

SAFETY = 20.0


def masked_mean(x, mask, axis=None):
    if axis is None:
        return (x * mask).sum() / mask.sum()
    return (x * mask).sum(axis) / mask.sum(axis)


def aggregate(per_token_loss, mask, loss_type, max_completion_length=None):
    per_token_loss = per_token_loss.expand_as(mask) if per_token_loss.shape[1] == 1 else per_token_loss
    if loss_type == "grpo":
        return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type in ("bnpo", "dapo"):
        return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        return (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length)
    raise ValueError(loss_type)


def trl_policy_loss(per_token_logps, old_per_token_logps, ref_per_token_logps, advantages, mask, *,
                    policy_loss, level, epsilon_low, epsilon_high, beta, cispo_max=5.0,
                    sapo_temperature_pos=1.0, sapo_temperature_neg=1.05, entropy_mask=None,
                    importance_sampling_ratio=None):
    """Returns (per_token_loss before aggregation, metrics-as-TRL-logs-them)."""
    advantages = advantages.unsqueeze(1)
    old = per_token_logps.detach() if old_per_token_logps is None else old_per_token_logps
    log_ratio = per_token_logps - old
    if level == "token":
        log_importance_weights = log_ratio
    elif level == "sequence":
        log_importance_weights = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    else:  # sequence_token (GSPO-token)
        seq = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).detach().unsqueeze(-1)
        log_importance_weights = per_token_logps - per_token_logps.detach() + seq
    coef_1 = torch.exp(log_importance_weights)
    if ref_per_token_logps is not None:
        d = ref_per_token_logps - per_token_logps
        per_token_kl = torch.exp(d) - d - 1
    if policy_loss == "cispo":
        clamped = torch.clamp(coef_1, max=cispo_max).detach()
        per_token_loss = -clamped * advantages * per_token_logps
    elif policy_loss == "grpo":
        coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)
        per_token_loss = -torch.min(coef_1 * advantages, coef_2 * advantages)
    elif policy_loss == "sapo":
        pos = (advantages > 0).expand_as(coef_1 if coef_1.shape[1] > 1 else advantages)
        temps = torch.where(pos, torch.tensor(sapo_temperature_pos, dtype=coef_1.dtype),
                            torch.tensor(sapo_temperature_neg, dtype=coef_1.dtype))
        per_token_loss = -(torch.sigmoid(temps * (coef_1 - 1)) * 4 / temps) * advantages
    else:
        raise ValueError(policy_loss)
    if entropy_mask is not None:
        per_token_loss = per_token_loss * entropy_mask
    if importance_sampling_ratio is not None:
        per_token_loss = per_token_loss * importance_sampling_ratio
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl

    def masked_batch_mean(x):
        return x.mean() if x.shape[1] == 1 else (x * mask).sum() / mask.sum().clamp(min=1.0)

    metrics = {}
    if policy_loss == "grpo":
        is_low = (coef_1 < 1 - epsilon_low) & (advantages < 0)
        is_high = (coef_1 > 1 + epsilon_high) & (advantages > 0)
        metrics = {"clip_frac_low": masked_batch_mean(is_low.double()),
                   "clip_frac_high": masked_batch_mean(is_high.double()),
                   "clip_frac": masked_batch_mean((is_low | is_high).double())}
    elif policy_loss == "cispo":
        metrics = {"clip_frac_high": masked_batch_mean(((coef_1 > cispo_max) & (advantages > 0)).double())}
    if beta != 0.0:
        metrics["kl"] = masked_batch_mean(per_token_kl)
    return per_token_loss, metrics


def verl_policy_matrix(name, old_log_prob, log_prob, advantages, response_mask, *, clip_ratio_low,
                       clip_ratio_high, clip_cov_ratio=2e-4, clip_cov_lb=1.0, clip_cov_ub=5.0,
                       priority=None, kl_cov_ratio=2e-4, ppo_kl_coef=1.0):
    """(loss matrix [B, T] or [B, 1], metrics)."""
    advantages = advantages.unsqueeze(1).expand_as(log_prob)
    negative_approx_kl = log_prob - old_log_prob
    if name == "geo_mean":
        sgn = torch.sign(advantages)
        clamp = torch.clamp(negative_approx_kl, -clip_ratio_low, clip_ratio_high)
        kl_min = sgn * torch.min(sgn * negative_approx_kl, sgn * clamp)
        n = response_mask.sum(-1)
        ratio = torch.exp((kl_min * response_mask).sum(-1) / (n + 1e-8))
        advantage = (advantages * response_mask).sum(-1) / (n + 1e-8)
        clipped = torch.ne(negative_approx_kl, clamp)
        metrics = {"clip_frac_high": masked_mean((clipped & (advantages > 0)).double(), response_mask),
                   "clip_frac_low": masked_mean((clipped & (advantages < 0)).double(), response_mask)}
        return (-advantage * ratio).unsqueeze(1), metrics
    ratio = torch.exp(negative_approx_kl)
    if name == "clip_cov":
        pg1 = -advantages * ratio
        pg2 = -advantages * torch.clamp(ratio, 1 - clip_ratio_low, 1 + clip_ratio_high)
        clip_by_origin = (pg2 > pg1) & (response_mask > 0)
        cov_all = (advantages - masked_mean(advantages, response_mask)) * (
            log_prob - masked_mean(log_prob.detach(), response_mask))
        cov_all = cov_all.detach().clone()
        cov_all[response_mask == 0] = -torch.inf
        cov_all[clip_by_origin] = -torch.inf
        clip_num = max(int(clip_cov_ratio * response_mask.sum().item()), 1)
        idx = torch.nonzero((cov_all < clip_cov_ub) & (cov_all > clip_cov_lb) & (response_mask > 0))
        corr = torch.ones_like(advantages)
        if len(idx) > 0:
            order = torch.argsort(priority[idx[:, 0], idx[:, 1]], stable=True)  # randperm, seeded
            idx = idx[order[: min(clip_num, len(idx))]]
            corr[idx[:, 0], idx[:, 1]] = 0
        return torch.maximum(pg1, pg2) * corr, {"cov_selected_frac": masked_mean((corr == 0).double(),
                                                                                  response_mask)}
    if name == "kl_cov":
        abs_kl = negative_approx_kl.abs()
        pg_losses = (-advantages * ratio).clone()
        pg_kl = -advantages * ratio + ppo_kl_coef * abs_kl
        valid = response_mask > 0
        valid_idx = torch.nonzero(valid.reshape(-1), as_tuple=True)[0]
        adv_v = advantages[valid].detach().reshape(-1)
        logp_v = log_prob[valid].detach().reshape(-1)
        cov = (adv_v - adv_v.mean()) * (logp_v - logp_v.mean())
        k = max(1, int(len(cov) * kl_cov_ratio))
        large = valid_idx[torch.topk(cov, k, largest=True).indices]
        rows, cols = large // advantages.shape[1], large % advantages.shape[1]
        pg_losses[rows, cols] = pg_kl[rows, cols]
        return pg_losses, {"cov_selected_frac": torch.tensor(k / response_mask.sum().item())}
    raise ValueError(name)


def trl_high_entropy_mask(entropies, mask, threshold):
    non_pad = entropies[mask.bool()].double()
    entropy_threshold = torch.quantile(non_pad, threshold)
    return ((entropies * mask) >= entropy_threshold) & mask.bool()


def verl_rollout_correction(old_log_prob, rollout_log_prob, response_mask, *, is_level=None,
                            is_threshold=2.0, is_mode="truncate", rs_level=None, rs_threshold=2.0,
                            rs_threshold_lower=None):
    log_ratio = old_log_prob - rollout_log_prob

    def level_log(level):
        if level == "token":
            return log_ratio
        s = (log_ratio * response_mask).sum(-1, keepdim=True)
        return s if level == "sequence" else s / response_mask.sum(-1, keepdim=True)

    metrics = {"rollout_kl_k1": masked_mean(-log_ratio, response_mask),
               "rollout_kl_k3": masked_mean(torch.exp(log_ratio) - log_ratio - 1, response_mask)}

    def stats(prefix, log_for_metrics, weights, upper, lower):
        if log_for_metrics.shape[1] == 1:
            metrics[f"{prefix}_max"] = torch.exp(torch.clamp(log_for_metrics.max(), max=SAFETY))
            metrics[f"{prefix}_min"] = torch.exp(log_for_metrics.min())
            log_upper, log_lower = torch.log(torch.tensor(upper)), torch.log(torch.tensor(lower))
            metrics[f"{prefix}_fraction_high"] = (log_for_metrics > log_upper).double().mean()
            metrics[f"{prefix}_fraction_low"] = (log_for_metrics < log_lower).double().mean()
        else:
            b = response_mask.bool()
            metrics[f"{prefix}_max"] = weights.masked_fill(~b, float("-inf")).max()
            metrics[f"{prefix}_min"] = weights.masked_fill(~b, float("inf")).min()
            metrics[f"{prefix}_fraction_high"] = masked_mean((weights > upper).double(), response_mask)
            metrics[f"{prefix}_fraction_low"] = masked_mean((weights < lower).double(), response_mask)
        metrics[f"{prefix}_mean"] = masked_mean(weights, response_mask)
        clamped = weights.clamp(min=lower, max=upper)
        mean_c = masked_mean(clamped, response_mask)
        metrics[f"{prefix}_std"] = torch.sqrt(torch.clamp(
            masked_mean(clamped.square(), response_mask) - mean_c.square(), min=0.0))
        metrics[f"{prefix}_eff_sample_size"] = 1.0 / masked_mean((clamped / (mean_c + 1e-8)).square(),
                                                                 response_mask)

    weights = response_mask.clone()
    if is_level is not None:
        lr = level_log(is_level)
        w = torch.exp(torch.clamp(lr, -SAFETY, SAFETY)).expand_as(log_ratio) * response_mask
        stats("rollout_is", lr, w, is_threshold, 1.0 / is_threshold)
        weights = w.clamp(max=is_threshold) if is_mode == "truncate" else w.masked_fill(w > is_threshold, 0.0)
    new_mask = response_mask.clone()
    if rs_level is not None:
        upper = rs_threshold
        lower = rs_threshold_lower if rs_threshold_lower is not None else 1.0 / upper
        lr = level_log(rs_level)
        w = torch.exp(torch.clamp(lr, -SAFETY, SAFETY)).expand_as(log_ratio)
        keep = ((w >= lower) & (w <= upper)).double()
        stats("rollout_rs", lr, w, upper, lower)
        metrics["rollout_rs_masked_fraction"] = masked_mean(1 - keep, response_mask)
        if rs_level == "token":
            rejected = ((1 - keep) * response_mask).sum(-1) > 0
            metrics["rollout_rs_seq_masked_fraction"] = rejected.double().mean()
        else:
            metrics["rollout_rs_seq_masked_fraction"] = (1 - keep[:, 0]).mean()
        new_mask = response_mask * keep
    return weights, new_mask, metrics


def verl_rloo(scores, group_size):
    grouped = scores.view(-1, group_size)
    mean = grouped.mean(1, keepdim=True)
    n = group_size
    return (grouped * n / (n - 1) - mean * n / (n - 1)).reshape(-1)


def verl_reinforce_pp_baseline(scores, group_size, lengths, T):
    grouped = scores.view(-1, group_size)
    centred = (grouped - grouped.mean(1, keepdim=True)).reshape(-1)
    mask = (torch.arange(T)[None] < lengths[:, None]).double()
    tok = centred.unsqueeze(-1).tile([1, T]) * mask
    mean = masked_mean(tok, mask)
    var = masked_mean((tok - mean) ** 2, mask) * (mask.sum() / (mask.sum() - 1))
    whitened = (tok - mean) * torch.rsqrt(var + 1e-8) * mask
    return whitened[:, 0]  # every completion has >= 1 token in the test
