"""Preference objectives selected by name (`registry.PREFERENCE_OBJECTIVES`, recipe field
`mpo.loss`): the batch-level loss the MPO step optimises.

An objective takes `PreferenceInputs` and the static options (beta, weights,
label_smoothing; accept `**_` for the rest) and returns (loss, metrics): a scalar fp32 loss
over the B pairs and extra metrics (may be empty). The MPO step logs the full MPO metrics
(implicit rewards, margins, preference accuracy, the three MPO terms, the BCO delta) for
every objective, so runs compare column for column; extra metrics are added beside them.
With Delta_c = chosen - ref_chosen, Delta_r = rejected - ref_rejected (sequence sums):

    mpo       w_p L_dpo + w_q L_bco_pair + w_g L_sft     (TRL 0.21 loss_type=[sigmoid, bco_pair, sft])
    dpo       L_dpo = mean[-(1-ls) log sig(z) - ls log sig(-z)], z = beta (Delta_c - Delta_r)
    sigmoid   the same as dpo (TRL's loss_type name)
    bco_pair  mean[-log sig(beta Delta_c - delta) - log sig(-(beta Delta_r - delta))]
    sft       the NLL of the chosen tokens (token mean over the batch)
Formulas and sources: `preference.py`, `mpo.py`, `sft.py`; docs/losses.md shows how to add one.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from r1v2_jax.losses.mpo import mpo_loss, sequence_logps
from r1v2_jax.losses.preference import BCODeltaState, bco_pair_loss, dpo_loss
from r1v2_jax.losses.sft import sft_loss


class PreferenceInputs(NamedTuple):
    chosen_tok: jax.Array  # [B, Tc] policy token log-probs of the chosen completions (gradient)
    chosen_mask: jax.Array  # [B, Tc] completion mask
    rejected_tok: jax.Array  # [B, Tr]
    rejected_mask: jax.Array  # [B, Tr]
    ref_chosen: jax.Array  # [B] reference sequence log-probs (constants)
    ref_rejected: jax.Array  # [B]
    delta_state: BCODeltaState  # BCO running delta before this batch's update

    @property
    def chosen(self) -> jax.Array:
        """[B] policy sequence log-probs of the chosen completions."""
        return sequence_logps(self.chosen_tok, self.chosen_mask)

    @property
    def rejected(self) -> jax.Array:
        return sequence_logps(self.rejected_tok, self.rejected_mask)


def mpo(x: PreferenceInputs, *, beta, weights, label_smoothing, **_):
    loss, _, _ = mpo_loss(x.chosen_tok, x.chosen_mask, x.rejected_tok, x.rejected_mask, x.ref_chosen,
                          x.ref_rejected, x.delta_state, beta=beta, weights=weights,
                          label_smoothing=label_smoothing)
    return loss, {}


def dpo(x: PreferenceInputs, *, beta, label_smoothing, **_):
    loss, _ = dpo_loss(x.chosen, x.rejected, x.ref_chosen, x.ref_rejected, beta=beta,
                       label_smoothing=label_smoothing)
    return loss, {}


def bco_pair(x: PreferenceInputs, *, beta, **_):
    loss, _, _ = bco_pair_loss(x.chosen, x.rejected, x.ref_chosen, x.ref_rejected, x.delta_state,
                               beta=beta)
    return loss, {}


def sft(x: PreferenceInputs, **_):
    loss, _ = sft_loss(x.chosen_tok, x.chosen_mask)
    return loss, {}
