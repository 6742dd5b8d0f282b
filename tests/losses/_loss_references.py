"""Reference losses re-expressed in PyTorch (float64) from the reference code.

- trl_grpo_loss:   TRL 1.x `GRPOTrainer._compute_loss` (token-level importance sampling,
                   one process, gradient_accumulation_steps = 1), with the KL estimator
                   swapped per Tunix `common.compute_kl_divergence` for k1/k2 and the
                   dual clip per Tunix `grpo_loss_fn` (`epsilon_c`).
- trl_advantages:  TRL 1.x `_generate_and_score_completions` (scale_rewards).
- TrlRunningMoments, trl_dpo_loss, trl_mpo_step: TRL 0.21 `RunningMoments`,
                   `DPOTrainer.dpo_loss` ("sigmoid", "bco_pair", "sft") and the weighted
                   sum in `get_batch_loss_metrics`; the "sft" term is `nll_loss` =
                   cross-entropy over all chosen completion tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def trl_grpo_loss(per_token_logps, old_per_token_logps, ref_per_token_logps, advantages, mask, *,
                  loss_type, epsilon_low, epsilon_high, beta, kl_estimator="k3",
                  use_bias_correction_kl=False, dual_clip=None, trl_delta=None,
                  max_completion_length=None, num_items_in_batch=None, importance_sampling_ratio=None):
    advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    old = per_token_logps.detach() if old_per_token_logps is None else old_per_token_logps
    coef_1 = torch.exp(per_token_logps - old)
    if ref_per_token_logps is not None:
        d = ref_per_token_logps - per_token_logps
        per_token_kl = {"k1": -d, "k2": 0.5 * d**2, "k3": torch.exp(d) - d - 1}[kl_estimator]
        if use_bias_correction_kl:
            per_token_kl = per_token_kl * coef_1
    coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)
    ratio_for_loss = coef_1 if trl_delta is None else torch.clamp(coef_1, max=trl_delta)  # TRL `delta`
    per_token_loss = -torch.min(ratio_for_loss * advantages, coef_2 * advantages)
    if dual_clip is not None:  # Tunix epsilon_c
        per_token_loss = torch.where(advantages < 0, torch.minimum(per_token_loss, -dual_clip * advantages),
                                     per_token_loss)
    if importance_sampling_ratio is not None:
        per_token_loss = per_token_loss * importance_sampling_ratio
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl

    if loss_type == "grpo":
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length)
    elif loss_type == "dapo":
        normalizer = mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = (per_token_loss * mask).sum() / normalizer
    else:
        raise ValueError(loss_type)

    count = mask.sum().clamp(min=1.0)
    is_low = (coef_1 < 1 - epsilon_low) & (advantages < 0)
    is_high = (coef_1 > 1 + epsilon_high) & (advantages > 0)
    metrics = {
        "clip_frac_low": (is_low * mask).sum() / count,
        "clip_frac_high": (is_high * mask).sum() / count,
        "clip_frac": ((is_low | is_high) * mask).sum() / count,
    }
    if ref_per_token_logps is not None:
        metrics["kl"] = (per_token_kl * mask).sum() / count
    return loss, metrics


def trl_advantages(rewards, num_generations, scale_rewards, eps=1e-4):
    grouped = rewards.view(-1, num_generations)
    advantages = rewards - grouped.mean(dim=1).repeat_interleave(num_generations)
    if scale_rewards == "group":
        std = grouped.std(dim=1).repeat_interleave(num_generations)
    elif scale_rewards == "batch":
        std = rewards.std().expand_as(rewards)
    if scale_rewards != "none":
        advantages = advantages / (std + eps)
    return advantages


class TrlRunningMoments:
    def __init__(self):
        self.mean, self.std, self.var, self.count = 0, 1, 1, 1e-24

    @torch.no_grad()
    def update(self, xs):
        xs_count = xs.numel()
        xs_var, xs_mean = torch.var_mean(xs, unbiased=False)
        delta = xs_mean - self.mean
        tot_count = self.count + xs_count
        new_sum = xs_var * xs_count
        old_sum = self.var * self.count + delta**2 * self.count * xs_count / tot_count
        self.mean += (delta * xs_count / tot_count).item()
        new_var = (old_sum + new_sum) / tot_count
        self.var = new_var.item()
        self.count = tot_count


def trl_dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, loss_type, *,
                 beta, label_smoothing, running, nll_loss):
    logits = (chosen_logps - rejected_logps) - (ref_chosen_logps - ref_rejected_logps)
    if loss_type == "sigmoid":
        losses = (-F.logsigmoid(beta * logits) * (1 - label_smoothing)
                  - F.logsigmoid(-beta * logits) * label_smoothing)
    elif loss_type == "bco_pair":
        chosen_logratios = chosen_logps - ref_chosen_logps
        rejected_logratios = rejected_logps - ref_rejected_logps
        rewards = torch.cat((beta * chosen_logratios, beta * rejected_logratios), 0).mean().detach()
        running.update(rewards)
        delta = running.mean
        losses = (-F.logsigmoid(beta * chosen_logratios - delta)
                  - F.logsigmoid(-(beta * rejected_logratios - delta)))
    elif loss_type == "sft":
        losses = nll_loss.expand(chosen_logps.shape[0])
    else:
        raise ValueError(loss_type)
    return losses


def trl_mpo_step(chosen_tok, chosen_mask, rejected_tok, rejected_mask, ref_chosen, ref_rejected, *,
                 beta, weights, label_smoothing, running):
    """One TRL 0.21 step with loss_type=["sigmoid","bco_pair","sft"], loss_weights=weights."""
    chosen = (chosen_tok * chosen_mask).sum(-1)
    rejected = (rejected_tok * rejected_mask).sum(-1)
    nll_loss = -(chosen_tok * chosen_mask).sum() / chosen_mask.sum()  # cross_entropy, ignore_index
    losses = 0
    for loss_type, weight in zip(("sigmoid", "bco_pair", "sft"), weights):
        losses = losses + weight * trl_dpo_loss(chosen, rejected, ref_chosen, ref_rejected, loss_type,
                                                beta=beta, label_smoothing=label_smoothing,
                                                running=running, nll_loss=nll_loss)
    return losses.mean()


def trl_reward_loss(chosen, rejected, margin=None, center_rewards_coefficient=None):
    """TRL RewardTrainer.compute_loss."""
    if margin is None:
        loss = -F.logsigmoid(chosen - rejected).mean()
    else:
        loss = -F.logsigmoid(chosen - rejected - margin).mean()
    if center_rewards_coefficient is not None:
        loss = loss + center_rewards_coefficient * torch.mean((chosen + rejected) ** 2)
    return loss


def jit_call(fn, *args, **static_options):
    """Runs fn(*args, **static_options) compiled once as a whole (cheaper than op-by-op)."""
    import functools

    import jax

    return jax.jit(functools.partial(fn, **static_options))(*args)
