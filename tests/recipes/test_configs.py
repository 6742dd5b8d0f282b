"""Every file in configs/ builds, with and without `:smoke`, and `:smoke` keeps the recipe's
logic while shrinking its sizes. (tests/recipes/test_rehearsal.py runs the 38B recipes.)"""

from pathlib import Path

import pytest

from r1v2_jax.train.config_loader import ConfigError, load_config_file

# every config file (configs/smoke.py is the helper behind `:smoke`, not a config)
CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.py")
                 if "def get_config" in p.read_text())
RECIPE_LOGIC = ("stage", "reward.w_rm", "reward.w_fmt", "reward.rm_gate", "train.trainable",
                "mesh.ici", "grpo.loss_type", "grpo.eps_high", "mpo.loss", "mpo.weights",
                "mpo.threshold", "model.attention_impl")


def _get(cfg, key):
    for part in key.split("."):
        if part not in cfg:
            return "<absent>"
        cfg = cfg[part]
    return cfg.to_dict() if hasattr(cfg, "to_dict") else cfg


def test_the_shipped_recipes_are_all_here():
    names = {p.stem for p in CONFIGS}
    assert {"sft_38b", "rm_38b", "mpo_38b", "grpo_38b", "grpo_demo", "tiny", "demo",
            "r1v2_38b"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_builds_and_takes_smoke(path):
    full = load_config_file(str(path))
    small = load_config_file(f"{path}:smoke")
    # the demo's smoke lowers the pair threshold: an untrained policy's samples tie
    exempt = {"mpo.threshold"} if path.stem == "grpo_demo" else set()
    for key in set(RECIPE_LOGIC) - exempt:
        assert _get(small, key) == _get(full, key), key
    if "train" in full:
        assert small.train.steps == 2 and full.train.steps > 2
        assert small.rollout.max_new_tokens <= 64 < full.rollout.max_new_tokens or \
            path.stem == "grpo_demo"
    with pytest.raises((ConfigError, ValueError), match="unknown config argument"):
        load_config_file(f"{path}:typo")


@pytest.mark.parametrize("stage", ["sft", "rm", "mpo", "grpo"])
def test_38b_recipes_name_their_stage_and_the_real_model(stage):
    cfg = load_config_file(str(Path("configs") / f"{stage}_38b.py"))
    assert cfg.stage == stage
    assert cfg.model.text.hidden_size == 5120 and cfg.model.param_dtype == "bfloat16"
    assert "rm_checkpoint" in cfg.reward and "checkpoint" in cfg.init


@pytest.mark.parametrize("recipe,key,value,message", [
    ("mpo_38b", "mpo.loss", "ipox", "config.mpo.loss: unknown preference objective 'ipox'"),
    ("grpo_38b", "grpo.policy_loss", "ppo2", "config.grpo.policy_loss: unknown policy loss"),
    ("grpo_38b", "grpo.advantage_estimator", "gae", "config.grpo.advantage_estimator"),
])
def test_unknown_registered_names_are_refused_before_any_load(recipe, key, value, message):
    from r1v2_jax.recipes.validate import RecipeError, _check_names
    from r1v2_jax.train.config_loader import apply_overrides

    cfg = apply_overrides(load_config_file(str(Path("configs") / f"{recipe}.py")),
                          [f"--config.{key}={value}"])
    with pytest.raises(RecipeError, match=message):
        _check_names(cfg)


def test_helper_modules_run_through_the_recipes_that_import_them():
    # grpo_base.py, mpo_base.py and smoke.py define no recipe of their own: they are the
    # shared defaults every recipe above builds on, so each runs whenever one of those does
    root = Path(__file__).resolve().parents[2] / "configs"
    helpers = {p.stem for p in root.glob("*.py")} - {p.stem for p in CONFIGS}
    assert helpers == {"grpo_base", "mpo_base", "smoke"}
    users = {h: [p.stem for p in CONFIGS if f"from {h} import" in p.read_text()]
             for h in helpers}
    assert all(users.values()), users
    assert "grpo_38b" in users["grpo_base"] and "mpo_38b" in users["mpo_base"]
