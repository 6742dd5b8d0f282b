"""Checks a recipe before anything heavy happens: a missing file or an impossible option
is refused in a second, not after a 77 GB checkpoint load and a first rollout."""

from __future__ import annotations

from r1v2_jax.errors import UserError
from r1v2_jax.recipes import paths

STAGE_DATA = {  # stage -> (what data.train holds, whether data.heldout is required)
    "sft": ("SFT records (question + response)", False),
    "rm": ("preference records", False),
    "mpo": ("prompt records", True),
    "grpo": ("prompt records", True),
}


class RecipeError(UserError, ValueError):
    """A recipe that cannot run as configured (a user error)."""


def _need_path(cfg, key: str, why: str) -> None:
    node = cfg
    for part in key.split("."):
        node = node[part]
    if not node:
        raise RecipeError(f"config.{key} is empty: {why}")
    if str(node).startswith("tfds:"):  # a registered data set: opening it names what is wrong
        return
    if not paths.exists(str(node)):
        raise RecipeError(f"config.{key}: {node} does not exist")


def validate_recipe(cfg) -> None:
    stage = str(cfg.get("stage", ""))
    if stage not in STAGE_DATA:
        raise RecipeError(f"config.stage must be one of {sorted(STAGE_DATA)}, got {stage!r}")
    kind, heldout_required = STAGE_DATA[stage]
    _need_path(cfg, "init.checkpoint", "point it at the output of `r1v2 convert to-jax` or a "
               "previous stage's WORKDIR/final")
    if cfg.tokenizer:
        _need_path(cfg, "tokenizer", "")
    _need_path(cfg, "data.train", f"a JSONL file of {kind} is required")
    if heldout_required or cfg.data.heldout:
        _need_path(cfg, "data.heldout", "a held-out JSONL file of prompt records is required "
                   "for evaluation")
    if stage == "mpo" and cfg.data.get("preferences"):
        _need_path(cfg, "data.preferences", "")
    if "reward" in cfg and float(cfg.reward.w_rm) != 0.0:
        if stage in ("mpo", "grpo", "sft"):
            _need_path(cfg, "reward.rm_checkpoint",
                       f"reward.w_rm={cfg.reward.w_rm} needs a reward model (the final/ folder "
                       f"of an `rm` run), or set --config.reward.w_rm=0")
            cal = cfg.reward.rm_calibration or paths.join(str(cfg.reward.rm_checkpoint),
                                                          "calibration.json")
            if not paths.exists(cal):
                raise RecipeError(f"config.reward.rm_calibration: {cal} does not exist (an `rm` "
                                  f"run writes calibration.json into its final/)")
    _check_names(cfg)
    for key in ("num_threads", "prefetch", "replay_cache"):
        if key in cfg.data and int(cfg.data[key]) < 1:
            raise RecipeError(f"config.data.{key} must be >= 1, got {cfg.data[key]}")
    steps = int(cfg.train.steps)
    if steps < 1:
        raise RecipeError(f"config.train.steps must be >= 1, got {steps}")
    if stage == "grpo" and int(cfg.rollout.num_generations) < 2:
        raise RecipeError(f"config.rollout.num_generations must be >= 2 (group advantages), "
                          f"got {cfg.rollout.num_generations}")


def _check_names(cfg) -> None:
    """Loss, estimator and objective names against their registries (docs/losses.md)."""
    from r1v2_jax.losses import PREFERENCE_OBJECTIVES
    from r1v2_jax.rl.grpo_step import validate_grpo_config

    try:
        if "grpo" in cfg:
            validate_grpo_config(cfg.grpo)
        if "mpo" in cfg:
            PREFERENCE_OBJECTIVES.check(cfg.mpo.loss, "config.mpo.loss")
    except ValueError as err:
        raise RecipeError(str(err)) from None
