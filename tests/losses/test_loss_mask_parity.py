"""Masked tokens leave the loss: TRL `mask_truncated_completions` and verl rollout-correction
rejection (`rollout_rs`) change the completion mask itself, so every aggregation's
denominator, the KL term and the metrics see the reduced mask; TRL's masked-IS modes
(`vllm_importance_sampling_mode` token_mask / sequence_mask) zero the IS weight only.

The batch goes through the trainer's host path (`reward_shaping.truncation_keep`,
`off_policy.correction_terms`, `batching.grpo_batch(loss_mask=)`); the references are TRL 1.x
`GRPOTrainer._compute_loss` and verl `compute_policy_loss_vanilla` + `agg_loss` +
`rollout_corr_helper`, re-expressed in torch float64 (`_policy_references`). Loss, gradient
and metrics, each aggregation, KL on / off, and 4 micro-batches == 1 batch.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from _policy_references import aggregate, trl_policy_loss, verl_rollout_correction
from r1v2_jax.losses import LOSS_TYPES, accumulated_loss, grpo_loss, grpo_loss_terms, grpo_metrics
from r1v2_jax.rl.batching import grpo_batch
from r1v2_jax.rl.examples import PromptExample
from r1v2_jax.rl.off_policy import correction_terms
from r1v2_jax.rl.reward_shaping import truncation_keep
from r1v2_jax.rl.rollout import Sample

SEQ = 11
W = SEQ - 1  # width of the completion mask / log-prob rows
PROMPTS = (1, 2, 3, 1, 2, 1, 3, 2)
LENGTHS = (8, 3, 1, 6, 9, 4, 7, 2)
TRUNCATED = (0, 4, 6)  # rows cut at the token limit
MCL = W + 2  # dr_grpo's max_completion_length
EPS_LOW, EPS_HIGH, BETA = 0.2, 0.28, 0.04
VERL_CLIP_C = 3.0  # verl clip_ratio_c (dual clip) default
CASES = {  # name: (family, options)
    "trl_mask_truncated": ("trl", dict(truncated=True)),
    "trl_token_mask": ("trl", dict(is_level="token", is_threshold=1.25, is_mode="mask")),
    "trl_sequence_mask_and_truncated": ("trl", dict(is_level="sequence", is_threshold=1.6,
                                                    is_mode="mask", truncated=True)),
    "verl_rs_token": ("verl", dict(rs_level="token", rs_threshold=1.3, rs_threshold_lower=0.85)),
    "verl_rs_sequence_tis": ("verl", dict(rs_level="sequence", rs_threshold=1.7, is_level="token",
                                          is_threshold=1.2)),
    "verl_rs_geometric": ("verl", dict(rs_level="geometric", rs_threshold=1.06)),
}


def make_case(seed):
    """Samples (the rollout's behaviour log-probs inside) and [B, W] arrays: the trainer's
    log-probs of the update (logps, with garbage on padding), old (scored) and ref log-probs,
    the rollout's log-probs on the same columns, advantages, the packed completion mask."""
    rng = np.random.default_rng(seed)
    b = len(PROMPTS)
    logps = -np.abs(rng.normal(1.0, 0.8, (b, W)))
    log_ratio = np.stack([np.roll(np.linspace(-0.6, 0.6, W), r) for r in range(b)])
    old = logps - log_ratio - rng.uniform(-0.03, 0.03, (b, W))
    ref = logps + rng.normal(0.0, 0.5, (b, W))
    drift = np.array([0.12, -0.1, 0.03, 0.25, -0.04, 0.07, -0.2, 0.01])[:, None]
    rollout = old - drift + rng.normal(0.0, 0.15, (b, W))
    adv = np.array([1.3, -0.6, 0.7, -0.4, -1.1, 0.8, 0.5, -0.9]) * rng.uniform(0.5, 1.5, b)
    samples = []
    for i, (p, n) in enumerate(zip(PROMPTS, LENGTHS)):
        ex = PromptExample(i, np.arange(1, p + 1, dtype=np.int32), np.zeros((0, 4, 4, 3), np.float32),
                           "q", "a", "number")
        start = p - 1
        samples.append(Sample(ex, np.full(n, 7, np.int32), rollout[i, start:start + n].astype(np.float32),
                              "r", i in TRUNCATED, advantage=float(adv[i])))
    mask = pack(samples).completion_mask.reshape(b, W)
    logps[mask == 0] = rng.normal(0.0, 3.0, int((mask == 0).sum()))
    return samples, logps, old, ref, rollout, adv, mask


def pack(samples, loss_mask=None):
    return grpo_batch(samples, seq_len=SEQ, micro=len(samples), tiles_per_micro=0, pad_id=0,
                      image_shape=(4, 4, 3), loss_mask=loss_mask)


def t64(x):
    return torch.tensor(np.asarray(x, np.float64))


def rc_options(opts):
    return {k: v for k, v in opts.items() if k != "truncated"}


def reference(family, opts, loss_type, kl, logps, old, ref, rollout, adv, mask):
    lp = torch.tensor(logps, dtype=torch.float64, requires_grad=True)
    m = t64(mask)
    beta = BETA if kl else 0.0
    if family == "trl":
        if opts.get("truncated"):  # TRL: completion_mask * (~is_truncated)
            m = m * t64([i not in TRUNCATED for i in range(len(m))])[:, None]
        ratio = None
        if "is_level" in opts:  # TRL vllm_importance_sampling_*: on the original mask
            log_r = (t64(old) - t64(rollout)) * t64(mask)
            log_r = log_r if opts["is_level"] == "token" else log_r.sum(-1, keepdim=True)
            ratio = torch.exp(log_r).masked_fill(torch.exp(log_r) > opts["is_threshold"], 0.0)
        per_token, metrics = trl_policy_loss(lp, t64(old), t64(ref), t64(adv), m, policy_loss="grpo",
                                             level="token", epsilon_low=EPS_LOW,
                                             epsilon_high=EPS_HIGH, beta=beta,
                                             importance_sampling_ratio=ratio)
    else:  # verl: rollout_corr_helper -> response_mask, then compute_policy_loss_vanilla
        weights, m, _ = verl_rollout_correction(t64(old), t64(rollout), m, **opts)
        a = t64(adv)[:, None]
        ratio = torch.exp(lp - t64(old))
        pg1, pg2 = -a * ratio, -a * torch.clamp(ratio, 1 - EPS_LOW, 1 + EPS_HIGH)
        clip1 = torch.maximum(pg1, pg2)
        pg3 = -a * VERL_CLIP_C
        per_token = torch.where(a < 0, torch.minimum(pg3, clip1), clip1) * weights
        d = t64(ref) - lp
        kld = torch.clamp(torch.exp(d) - d - 1, -10, 10)  # verl low_var_kl
        if kl:
            per_token = per_token + beta * kld
        mm = lambda x: (x * m).sum() / m.sum()  # noqa: E731
        metrics = {"clip_frac": mm((pg2 > pg1).double()),
                   "dual_clip_frac": mm(((clip1 > pg3) & (a < 0)).double())}
        if kl:
            metrics["kl"] = mm(kld)
    loss = aggregate(per_token, m, loss_type, MCL)
    loss.backward()
    metrics["num_tokens"] = m.sum()
    return loss.item(), lp.grad.numpy(), {k: float(v.detach()) for k, v in metrics.items()}


def host_batch(family, opts, samples, old):
    """The trainer's path: loss mask and IS weights from the samples, packed by grpo_batch."""
    keep, weights = None, None
    if any(k in opts for k in ("is_level", "rs_level")):
        weights, keep, _ = correction_terms(samples, old.astype(np.float32), rc_options(opts))
    if opts.get("truncated"):
        t = truncation_keep(samples)[:, None]
        keep = t if keep is None else keep * t
    mask = pack(samples, keep).completion_mask.reshape(len(samples), W)
    return mask, weights


def ours(family, opts, loss_type, kl, logps, old, ref, adv, mask, weights):
    """[(loss, grad, metrics) of the whole batch, the same from 4 accumulated micro-batches]."""
    f32 = lambda x: None if x is None else jnp.asarray(x, jnp.float32)  # noqa: E731
    kw = dict(loss_type=loss_type, eps_low=EPS_LOW, eps_high=EPS_HIGH, beta=BETA if kl else 0.0,
              dual_clip=VERL_CLIP_C if family == "verl" else None, max_completion_length=MCL)

    def terms(lp, num_micro):
        split = lambda x: None if x is None else x.reshape((num_micro, -1) + x.shape[1:])  # noqa
        parts = [grpo_loss_terms(*(split(x)[i] for x in (lp, f32(old), f32(ref), f32(adv), f32(mask))),
                                 importance_weights=None if weights is None else split(f32(weights))[i],
                                 **kw) for i in range(num_micro)]
        sums = jax.tree.map(lambda *x: sum(x), *[p[2] for p in parts])
        return accumulated_loss(sum(p[0] for p in parts), sum(p[1] for p in parts)), grpo_metrics(sums)

    @jax.jit
    def both(lp):  # one compile: the whole batch and 4 micro-batches of 2
        return [jax.value_and_grad(terms, has_aux=True)(lp, n) for n in (1, 4)]

    return [(float(loss), np.asarray(grad), {k: float(v) for k, v in metrics.items()})
            for (loss, metrics), grad in both(f32(logps))]


@pytest.mark.parametrize("kl", [False, True], ids=["no_kl", "k3"])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_trl_and_verl(case, loss_type, kl):
    family, opts = CASES[case]
    samples, logps, old, ref, rollout, adv, mask = make_case(seed=len(case) + 3 * kl)
    expected = reference(family, opts, loss_type, kl, logps, old, ref, rollout, adv, mask)
    got_mask, weights = host_batch(family, opts, samples, old)
    reduced = float(got_mask.sum())
    assert reduced == expected[2]["num_tokens"]
    if opts.get("truncated") or "rs_level" in opts:
        assert 0 < reduced < mask.sum()  # the option removes tokens from the mask
    for got in ours(family, opts, loss_type, kl, logps, old, ref, adv, got_mask, weights):
        np.testing.assert_allclose(got[0], expected[0], rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(got[1], expected[1], rtol=2e-4, atol=2e-7)
        for key, value in expected[2].items():
            np.testing.assert_allclose(got[2][key], value, rtol=2e-5, atol=1e-6, err_msg=key)


def test_masked_tokens_leave_the_denominators_zero_weights_do_not():
    """The two mechanisms differ: a rejected / truncated token (mask 0) counts nowhere; a
    zero IS weight (TRL's *_mask modes) keeps its token in the token mean and the KL."""
    samples, logps, old, ref, _, adv, mask = make_case(seed=5)
    keep = truncation_keep(samples)
    masked = pack(samples, keep).completion_mask.reshape(mask.shape)
    zero_weight = np.broadcast_to(keep[:, None], mask.shape)
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    run = lambda m, w: grpo_loss(f32(logps), f32(old), f32(ref), f32(adv), f32(m), loss_type="bnpo",  # noqa
                                 beta=BETA, importance_weights=None if w is None else f32(w))
    by_mask, m_mask = run(masked, None)
    by_weight, m_weight = run(mask, zero_weight)
    assert float(m_mask["num_tokens"]) == mask.sum() - sum(LENGTHS[i] for i in TRUNCATED)
    assert float(m_weight["num_tokens"]) == mask.sum()
    assert abs(float(by_mask) - float(by_weight)) > 1e-3
    assert abs(float(m_mask["kl"]) - float(m_weight["kl"])) > 1e-4


def test_grpo_batch_loss_mask_shapes():
    samples = make_case(seed=1)[0]
    per_row = pack(samples, truncation_keep(samples)).completion_mask.reshape(len(samples), W)
    assert [i for i in range(len(samples)) if per_row[i].sum() == 0] == list(TRUNCATED)
    with pytest.raises(ValueError, match=r"^grpo_batch: loss_mask must have shape \(8,\) or "
                                         r"\(8, 10\), got \(8, 9\)$"):
        pack(samples, np.ones((8, 9), np.float32))
