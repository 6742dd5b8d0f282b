"""RM-term options of the hybrid reward (rl/rewards.RMAdvantageOptions), hand-computed.

Batch of two groups of 2 (std_ddof 0, eps 1e-4):
  group 1, both correct:  rule [1, 1], RM [0.015, 0]   (the RM alone orders it)
  group 2, mixed:         rule [1, 0], RM [0.3, -0.3]
"""

import jax.numpy as jnp
import numpy as np
import pytest

from r1v2_jax.losses import ADVANTAGE_ESTIMATORS
from r1v2_jax.rl.rewards import RMAdvantageOptions, hybrid_advantages, scope_rm

RULE = np.array([1.0, 1.0, 1.0, 0.0])
RM = np.array([0.015, 0.0, 0.3, -0.3])
EPS = 1e-4


def _adv(**opts):
    return hybrid_advantages(RULE, RM, 2, RMAdvantageOptions(**opts), std_ddof=0, eps=EPS)


def test_defaults_are_plain_grpo_and_stretch_a_tiny_rm_difference():
    adv, m = _adv()
    # group 1: total [1.015, 1], deviations +-0.0075, std 0.0075 -> ~+-0.99
    # group 2: total [1.3, -0.3], deviations +-0.8, std 0.8
    a1, a2 = 0.0075 / (0.0075 + EPS), 0.8 / (0.8 + EPS)
    np.testing.assert_allclose(adv, [a1, -a1, a2, -a2], rtol=1e-6)
    grpo = ADVANTAGE_ESTIMATORS.get("grpo", "test")(jnp.asarray(RULE + RM, jnp.float32), 2,
                                                     scale="group", std_ddof=0, eps=EPS)
    np.testing.assert_allclose(adv, np.asarray(grpo), rtol=1e-5)
    assert m["rm_scoped_groups"] == 0.0
    # A_rm: group 1 all of it (+-a1), group 2 0.3 / 0.8 of it
    share = (2 * a1 + 2 * 0.3 / (0.8 + EPS)) / (2 * a1 + 2 * a2)
    assert m["rm_adv_share"] == pytest.approx(share, rel=1e-6)
    assert RMAdvantageOptions().is_default


def test_mixed_groups_drops_the_rm_term_where_the_rule_rewards_agree():
    np.testing.assert_array_equal(scope_rm(RULE, RM, 2, "mixed_groups"), [0.0, 0.0, 0.3, -0.3])
    np.testing.assert_array_equal(scope_rm(RULE, RM, 2, "all"), RM)
    adv, m = _adv(scope="mixed_groups")
    a2 = 0.8 / (0.8 + EPS)
    np.testing.assert_allclose(adv, [0.0, 0.0, a2, -a2], rtol=1e-6)
    assert m["rm_scoped_groups"] == 0.5
    assert m["rm_adv_share"] == pytest.approx(0.3 / 0.8, rel=1e-6)


def test_batch_scale_keeps_an_rm_difference_at_the_batch_reward_scale():
    adv, _ = _adv(scale="batch")
    # std over the batch of total = [1.015, 1, 1.3, -0.3] (mean 0.75375), ddof 0
    dev = np.array([0.26125, 0.24625, 0.54625, -1.05375])
    std_b = np.sqrt(np.mean(dev ** 2))
    assert std_b == pytest.approx(0.620014, abs=1e-6)
    # group 1: A_rule = 0 / (0 + eps); A_rm = +-0.0075 / std_b: ~0.012, not ~1
    # group 2: A_rule = +-0.5 / (0.5 + eps); A_rm = +-0.3 / (std_b + eps)
    r1 = 0.0075 / (std_b + EPS)
    r2 = 0.5 / (0.5 + EPS) + 0.3 / (std_b + EPS)
    np.testing.assert_allclose(adv, [r1, -r1, r2, -r2], rtol=1e-6)
    assert abs(adv[0]) < 0.0125


def test_share_cap_bounds_the_rm_part_of_each_advantage():
    adv, m = _adv(share_cap=0.2)
    # group 1: A_rule = 0 -> the RM part is capped to 0
    # group 2: A_rule = +-0.5/0.8001, A_rm = +-0.3/0.8001 capped to 0.25 * |A_rule|
    a_rule = 0.5 / (0.8 + EPS)
    np.testing.assert_allclose(adv, [0.0, 0.0, 1.25 * a_rule, -1.25 * a_rule], rtol=1e-6)
    assert m["rm_adv_share"] == pytest.approx(0.2, rel=1e-6)
    # a cap above the actual share changes nothing: 0.3 / 0.8 = 0.375 < 0.4
    np.testing.assert_allclose(_adv(scope="mixed_groups", share_cap=0.4)[0],
                               _adv(scope="mixed_groups")[0], rtol=1e-6)


@pytest.mark.parametrize("field, value, match", [
    ("scope", "correct_only", "config.reward.rm_scope must be one of"),
    ("scale", "none", "config.reward.rm_scale must be one of"),
    ("share_cap", 1.0, r"config.reward.rm_share_cap must be in \[0, 1\)"),
    ("share_cap", -0.1, r"config.reward.rm_share_cap must be in \[0, 1\)"),
])
def test_bad_options_name_the_config_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        RMAdvantageOptions(**{field: value})


def test_groups_must_divide_the_batch():
    with pytest.raises(ValueError, match="4 rewards do not split into groups of 3"):
        hybrid_advantages(RULE, RM, 3, RMAdvantageOptions(scale="batch"))


def _all_correct_rm_by_length(examples, responses):
    """Every answer correct; an RM term that varies with the response length."""
    n = len(responses)
    rm = np.asarray([(len(r) % 7) / 70 for r in responses], np.float32)
    return {"reward": 1.0 + 0.5 + 0.5 * rm, "accuracy": np.ones(n, np.float32),
            "format": np.ones(n, np.float32), "rm": rm, "hallucinated": np.zeros(n, bool)}


def test_trainer_routes_the_rm_options(tmp_path):
    """reward.rm_scope reaches the advantages: in all-correct groups the default lets the RM
    term alone make every sample effective; mixed_groups leaves none."""
    import jax

    from r1v2_jax.demo.pipeline import build_context
    from r1v2_jax.models import init_params
    from r1v2_jax.rl.grpo_trainer import GRPOTrainer
    from r1v2_jax.train.config_loader import apply_overrides, load_config_file
    from tests.rl.test_grpo_resume import OVERRIDES

    base = apply_overrides(load_config_file("configs/grpo_demo.py"), OVERRIDES + [
        "config.grpo.num_iterations=1", "config.train.eval_every=0",
        "config.train.checkpoint_every=0", "config.ssb.enabled=False", "config.reward.w_acc=1.0",
        "config.reward.w_fmt=0.5", "config.reward.w_rm=0.5"])
    ctx = build_context(base, str(tmp_path), log=lambda _: None)
    params = init_params(ctx.model, jax.random.key(0))

    def step(extra):
        cfg = apply_overrides(base, extra)
        trainer = GRPOTrainer(cfg, ctx.model, params, tokenizer=ctx.tokenizer, prompt=ctx.prompt,
                              train=ctx.train, heldout=ctx.heldout,
                              score=_all_correct_rm_by_length, workdir=str(tmp_path / str(len(extra))),
                              log=lambda _: None)
        return trainer.train_step()

    plain = step([])
    assert plain["effective_ratio_fresh"] > 0.5 and "rm_adv_share" not in plain
    scoped = step(["config.reward.rm_scope=mixed_groups", "config.reward.rm_share_cap=0.3"])
    assert scoped["effective_ratio_fresh"] == 0.0
    assert scoped["rm_scoped_groups"] == 1.0 and scoped["rm_adv_share"] == 0.0
    with pytest.raises(ValueError, match="config.grpo.advantage_estimator='grpo'"):
        step(["config.reward.rm_scale=batch", "config.grpo.advantage_estimator=rloo"])
