"""The MPO update step (device side) for any registered preference objective (`mpo.loss`:
"mpo", "dpo", "sft", ... from `losses.PREFERENCE_OBJECTIVES`).

One optimizer step on B pairs, split into M micro-batches of b ([M, b, ...] layout):

  pass 1 (no gradient): for every micro-batch, the policy's token log-probs of chosen and
    rejected and the frozen reference's sequence log-probs (the reference shares every
    frozen parameter with the policy; only its trainable part is a copy). The batch-level
    objective (the registry entry named by `mpo.loss`) is then evaluated ONCE on the whole
    batch: the running BCO delta is updated exactly once per optimizer step, with the
    statistic of the whole batch, and the loss/metrics are those of one big batch.
    The gradient of the objective w.r.t. the token log-probs, g = dL/dlogp, is taken
    there too (cheap: no model in it).
  pass 2: for every micro-batch, grad of sum(stop_gradient(g) * logp_theta) w.r.t. the
    parameters, accumulated over micro-batches. By the chain rule the sum is exactly
    dL/dtheta of the big batch, for any objective and any micro-batch size.

TRL 0.21 instead calls `dpo_loss` per micro-batch under gradient accumulation: its delta
is updated once per micro-batch with that micro-batch's statistic, and its loss is the
mean of micro-batch means. The two agree when M = 1. The price here is one extra policy
forward (pass 1) per step.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax

from r1v2_jax.losses import (PREFERENCE_OBJECTIVES, BCODeltaState, PreferenceInputs, mpo_loss,
                             sequence_logps)
from r1v2_jax.models import VLMConfig
from r1v2_jax.rl.pair_forward import pair_rows
from r1v2_jax.train.steps import accumulate, apply_update, merged, sequence_token_logps


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class MPOBatch:
    """chosen_* / rejected_*: ids and attention masks [M, b, T], completion masks
    [M, b, T-1] (1 where target t+1 is a completion token); pixel_values
    [M, tiles, H, W, 3] (the prompts' images, shared by both sides) or None."""

    chosen_ids: jax.Array
    chosen_attention: jax.Array
    chosen_completion: jax.Array
    rejected_ids: jax.Array
    rejected_attention: jax.Array
    rejected_completion: jax.Array
    pixel_values: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class MPOLossOptions:
    """loss: a name in `losses.PREFERENCE_OBJECTIVES`, e.g. "mpo" (w_p DPO + w_q BCO pair +
    w_g NLL), "dpo" (sigmoid DPO only), "sft" (NLL of chosen only); checked here, so an
    unknown name fails when the trainer is built. Names follow TRL's DPOConfig."""

    loss: str = "mpo"
    beta: float = 0.1
    weights: tuple[float, float, float] = (0.8, 0.2, 1.0)
    label_smoothing: float = 0.0
    logprob_chunk: int = 512

    def __post_init__(self):
        PREFERENCE_OBJECTIVES.check(self.loss, "config.mpo.loss")

    @classmethod
    def from_config(cls, mpo_cfg) -> "MPOLossOptions":
        return cls(loss=str(mpo_cfg.loss), beta=float(mpo_cfg.beta),
                   weights=tuple(float(w) for w in mpo_cfg.weights),
                   label_smoothing=float(mpo_cfg.label_smoothing),
                   logprob_chunk=int(mpo_cfg.logprob_chunk))


def pair_token_logps(config: VLMConfig, params, mb: MPOBatch, chunk: int):
    """Token log-probs [b, T-1] of chosen and rejected, one forward over the 2b rows
    (each side's rows see their prompts' own tiles: `rl/pair_forward.py`)."""
    b = mb.chosen_ids.shape[0]
    ids, attention, pixels = pair_rows(config, mb.chosen_ids, mb.chosen_attention,
                                       mb.rejected_ids, mb.rejected_attention, mb.pixel_values)
    logps = sequence_token_logps(config, params, ids, attention, pixels, chunk_size=chunk)
    return logps[:b], logps[b:]


def objective(opts: MPOLossOptions, chosen_tok, chosen_mask, rejected_tok, rejected_mask,
              ref_chosen, ref_rejected, delta_state: BCODeltaState):
    """The batch-level loss on [B, T-1] token log-probs -> (loss, (new_delta, metrics)).

    The loss is the registered objective `opts.loss`. Every objective logs the full MPO
    metrics (implicit rewards, margins, preference accuracy, the three terms, delta) and
    carries the delta state, so runs compare column for column; the objective's own
    metrics are added beside them.
    """
    # The MPO terms are the metrics of every objective (no gradient flows from them).
    _, new_state, metrics = mpo_loss(chosen_tok, chosen_mask, rejected_tok, rejected_mask,
                                     ref_chosen, ref_rejected, delta_state, beta=opts.beta,
                                     weights=opts.weights, label_smoothing=opts.label_smoothing)
    inputs = PreferenceInputs(chosen_tok, chosen_mask, rejected_tok, rejected_mask, ref_chosen,
                              ref_rejected, delta_state)
    loss, extra = PREFERENCE_OBJECTIVES.get(opts.loss, "config.mpo.loss")(
        inputs, beta=opts.beta, weights=opts.weights, label_smoothing=opts.label_smoothing)
    metrics = {**metrics, **jax.lax.stop_gradient(dict(extra))}
    metrics["pref_accuracy"] = metrics.pop("accuracy")
    return loss, (new_state, metrics)


def _flat(x):
    return x.reshape((-1,) + x.shape[2:])


def mpo_update(config: VLMConfig, opts: MPOLossOptions, optimizer: optax.GradientTransformation,
               frozen, ref_trainable, trainable, opt_state, delta_state: BCODeltaState,
               batch: MPOBatch, compute_dtype=None):
    """Pure update: returns (trainable, opt_state, delta_state, metrics)."""
    chunk = opts.logprob_chunk
    params = merged(trainable, frozen, compute_dtype)
    ref_params = merged(ref_trainable, frozen, compute_dtype)

    def first_pass(_, mb):
        chosen, rejected = pair_token_logps(config, params, mb, chunk)
        ref_c, ref_r = pair_token_logps(config, ref_params, mb, chunk)
        return None, (chosen, rejected, sequence_logps(ref_c, mb.chosen_completion),
                      sequence_logps(ref_r, mb.rejected_completion))

    _, (chosen, rejected, ref_chosen, ref_rejected) = jax.lax.scan(first_pass, None, batch)
    shape = chosen.shape
    grad_fn = jax.value_and_grad(
        lambda c, r: objective(opts, c, _flat(batch.chosen_completion), r,
                               _flat(batch.rejected_completion), _flat(ref_chosen),
                               _flat(ref_rejected), delta_state),
        argnums=(0, 1), has_aux=True)
    (loss, (new_delta, metrics)), (g_chosen, g_rejected) = grad_fn(_flat(chosen), _flat(rejected))

    def surrogate(trainable_, item):
        mb, gc, gr = item
        c, r = pair_token_logps(config, merged(trainable_, frozen, compute_dtype), mb, chunk)
        num = (jnp.sum(jnp.where(mb.chosen_completion > 0, gc * c, 0.0))
               + jnp.sum(jnp.where(mb.rejected_completion > 0, gr * r, 0.0)))
        # The cotangents already carry the big-batch normalisation: denominator 0 makes
        # `accumulate` divide by max(0, 1) = 1.
        return num, jnp.zeros((), jnp.float32), {}

    _, grads, _ = accumulate(surrogate, trainable,
                             (batch, g_chosen.reshape(shape), g_rejected.reshape(shape)))
    trainable, opt_state, upd = apply_update(optimizer, trainable, opt_state, grads, loss)
    # A skipped (non-finite) step leaves the delta where it was, like the parameters.
    keep = upd["skipped"] > 0
    new_delta = jax.tree.map(lambda old, new: jnp.where(keep, old, new), delta_state, new_delta)
    return trainable, opt_state, new_delta, {"loss": loss, **metrics, **upd}


def make_mpo_update(config: VLMConfig, opts: MPOLossOptions, optimizer, *, compute_dtype=None,
                    donate: bool = True, mesh=None, rules=None, state_shardings=None):
    """The compiled `mpo_update` (`sharding.compile_update`; state = trainable, optimizer
    state; the BCO delta and metrics replicated).
    (frozen, ref_trainable, trainable, opt_state, delta, batch)
      -> (trainable, opt_state, delta, metrics)."""
    from r1v2_jax.sharding import compile_update

    fn = functools.partial(mpo_update, config, opts, optimizer, compute_dtype=compute_dtype)
    return compile_update(fn, mesh=mesh, rules=rules, state_shardings=state_shardings,
                          num_replicated=2, donate_argnums=(2, 3) if donate else ())


def sharded_mpo_update(config, opts, optimizer, mesh, rules, trainable_shardings,
                       opt_state_shardings, *, compute_dtype=None, donate: bool = True):
    """`make_mpo_update` on a mesh."""
    return make_mpo_update(config, opts, optimizer, compute_dtype=compute_dtype, donate=donate,
                           mesh=mesh, rules=rules,
                           state_shardings=(trainable_shardings, opt_state_shardings))
