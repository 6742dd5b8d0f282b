"""Registries of losses, estimators and shapers, selected by name from a recipe config.

An entry is a callable or a lazy "module:attribute" string (so registering costs no import
and a new loss needs one file plus one line here). `get(name)` resolves it; an unknown name
raises a ValueError that lists the registered names, naming the config field when given.

Built-in entries (see docs/losses.md for formulas and sources):
    POLICY_LOSSES:          per-token policy objectives used by `grpo_loss_terms`
    ADVANTAGE_ESTIMATORS:   rewards [B] -> advantages [B]
    ROLLOUT_CORRECTIONS:    behaviour-vs-trainer corrections (IS weights / rejection masks)
    PREFERENCE_OBJECTIVES:  batch-level preference losses of the MPO step (`mpo.loss`)
    REWARD_SHAPERS:         per-completion reward terms added before the advantages
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any] | str] = {}

    def register(self, name: str, fn: Callable[..., Any] | str | None = None):
        """`register(name, fn_or_"module:attr")`, or `@register(name)` as a decorator."""
        if fn is None:
            return lambda f: self.register(name, f) and f
        if name in self._entries and self._entries[name] is not fn:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = fn
        return fn

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._entries))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def check(self, name: Any, where: str = "") -> None:
        if name not in self._entries:
            at = f"{where}: " if where else ""
            raise ValueError(f"{at}unknown {self.kind} {name!r}; registered: {', '.join(self.names())}")

    def get(self, name: str, where: str = "") -> Callable[..., Any]:
        self.check(name, where)
        entry = self._entries[name]
        if isinstance(entry, str):
            module, attr = entry.split(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry


POLICY_LOSSES = Registry("policy loss")
ADVANTAGE_ESTIMATORS = Registry("advantage estimator")
ROLLOUT_CORRECTIONS = Registry("rollout correction level")
PREFERENCE_OBJECTIVES = Registry("preference objective")
REWARD_SHAPERS = Registry("reward shaper")

_P = "r1v2_jax.losses.policy_losses:"
POLICY_LOSSES.register("grpo", _P + "clipped_surrogate")  # TRL grpo/bnpo/dr_grpo/dapo, verl vanilla
POLICY_LOSSES.register("cispo", _P + "cispo")  # TRL loss_type="cispo" (MiniMax-M1)
POLICY_LOSSES.register("gmpo", _P + "gmpo")  # verl geo_mean
POLICY_LOSSES.register("sapo", _P + "sapo")  # TRL loss_type="sapo"
POLICY_LOSSES.register("clip_cov", _P + "clip_cov")  # verl clip_cov
POLICY_LOSSES.register("kl_cov", _P + "kl_cov")  # verl kl_cov

_A = "r1v2_jax.losses.advantages:"
ADVANTAGE_ESTIMATORS.register("grpo", _A + "grpo_advantages")
ADVANTAGE_ESTIMATORS.register("dr_grpo", _A + "dr_grpo_advantages")
ADVANTAGE_ESTIMATORS.register("rloo", _A + "rloo_advantages")
ADVANTAGE_ESTIMATORS.register("reinforce_pp", _A + "reinforce_pp_advantages")

_R = "r1v2_jax.losses.rollout_correction:"
for _level in ("token", "sequence", "geometric"):
    ROLLOUT_CORRECTIONS.register(_level, _R + "rollout_correction")

_O = "r1v2_jax.losses.preference_objectives:"  # (PreferenceInputs, **options) -> (loss, metrics)
PREFERENCE_OBJECTIVES.register("mpo", _O + "mpo")  # 0.8 sigmoid + 0.2 bco_pair + 1.0 sft (InternVL)
PREFERENCE_OBJECTIVES.register("dpo", _O + "dpo")
PREFERENCE_OBJECTIVES.register("sigmoid", _O + "dpo")  # TRL's loss_type name for DPO
PREFERENCE_OBJECTIVES.register("bco_pair", _O + "bco_pair")
PREFERENCE_OBJECTIVES.register("sft", _O + "sft")

REWARD_SHAPERS.register("overlong", "r1v2_jax.losses.overlong:overlong_penalty")  # DAPO eq. 13
