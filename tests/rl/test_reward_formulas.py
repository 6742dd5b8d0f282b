"""The hybrid reward's host-side formulas at their edges: HybridRewardConfig defaults and
checks, calibration boundaries, the format reward's whitespace rules, the RM term's gate
at z = 0, compute_rewards' weights and checks, RMAdvantageOptions from a config.
Expected values by hand; no answer-checker workers (a stub checker returns fixed checks)."""

import dataclasses
import types

import numpy as np
import pytest

from r1v2_jax.rl.answers import AnswerCheck
from r1v2_jax.rl.rewards import (
    Calibration,
    HybridRewardConfig,
    RMAdvantageOptions,
    calibrate,
    compute_rewards,
    format_reward,
    hybrid_advantages,
    rm_term,
)


class StubChecker:
    """check_batch returns the given checks (correct, reason, extracted) in order."""

    def __init__(self, *checks):
        self.checks = [AnswerCheck(correct=c, reason=r, extracted=e) for c, r, e in checks]

    def check_batch(self, responses, golds, answer_types):
        assert len(responses) == len(self.checks)
        return self.checks


class ConstScorer:
    def __init__(self, values):
        self.values = np.asarray(values, np.float32)

    def score(self, prompts, responses, images):
        return self.values


def test_config_defaults():
    cfg = HybridRewardConfig()
    assert (cfg.w_acc, cfg.w_rm, cfg.w_fmt) == (1.0, 1.0, 1.0)
    assert cfg.rm_standardize is True and cfg.rm_clip_tau == 1.0 and cfg.rm_gate == "agree"
    assert cfg.think_opened_by_prompt is False
    HybridRewardConfig(rm_clip_tau=None, rm_gate="none")  # both accepted


@pytest.mark.parametrize("kw,message", [
    (dict(rm_gate="sign"), "HybridRewardConfig.rm_gate must be one of ('none', 'agree'), got 'sign'"),
    (dict(rm_clip_tau=0.0), "HybridRewardConfig.rm_clip_tau must be > 0 or None, got 0.0"),
    (dict(rm_clip_tau=-1.0), "HybridRewardConfig.rm_clip_tau must be > 0 or None, got -1.0"),
])
def test_config_checks_name_the_field(kw, message):
    with pytest.raises(ValueError) as err:
        HybridRewardConfig(**kw)
    assert str(err.value) == message


@pytest.mark.parametrize("response,opened,expected", [
    ("\n <think>r</think>a", False, 1.0),  # leading whitespace before <think>
    ("x<think>r</think>a", False, 0.0),  # text before <think>
    ("<think>r</think> \n\ta ", False, 1.0),
    ("<think>r</think> \n\t", False, 0.0),
    ("r</think>a", True, 1.0),
    ("<think>r</think>a", True, 0.0),
])
def test_format_reward_edges(response, opened, expected):
    assert format_reward(response, opened) == expected


def test_format_reward_default_expects_the_tag_in_the_response():
    assert format_reward("<think>r</think>a") == 1.0
    assert format_reward("r</think>a") == 0.0


def test_value_objects_are_frozen():
    batch = compute_rewards(["p"], ["<think>r</think>4"], ["4"], ["math"],
                            checker=StubChecker((True, "match", "4")),
                            config=HybridRewardConfig(w_rm=0.0))
    for obj, field in ((Calibration(1.0, 2.0, 3), "mean"), (HybridRewardConfig(), "w_rm"),
                       (RMAdvantageOptions(), "scope"), (batch, "total")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, field, 0)


def test_calibration_boundaries_and_dict():
    assert calibrate([1.0, 3.0]) == Calibration(2.0, 1.0, 2)  # 2 scores > max(1, ddof 0)
    assert calibrate(np.array([[1.0], [3.0], [5.0]]), ddof=2).std == pytest.approx(np.sqrt(8.0))
    with pytest.raises(ValueError) as err:
        calibrate([1.0])
    assert str(err.value) == "calibrate: need > 1 finite scores, got 1 (finite: 1)"
    with pytest.raises(ValueError) as err:
        calibrate([1.0, 2.0], ddof=2)
    assert str(err.value) == "calibrate: need > 2 finite scores, got 2 (finite: 2)"
    with pytest.raises(ValueError) as err:
        calibrate([1.0, np.inf, 2.0])
    assert str(err.value) == "calibrate: need > 1 finite scores, got 3 (finite: 2)"
    with pytest.raises(ValueError) as err:
        calibrate([2.0, 2.0])
    assert str(err.value) == "calibrate: all calibration scores are equal (std 0): cannot standardise"
    cal = Calibration(1.5, 0.5, 7)
    assert cal.to_dict() == {"mean": 1.5, "std": 0.5, "count": 7}
    back = Calibration.from_dict({"mean": "1.5", "std": 0.5, "count": 7.0})
    assert back == cal and type(back.mean) is float and type(back.count) is int
    with pytest.raises(ValueError) as err:
        Calibration.from_dict({"std": 1.0})
    assert str(err.value) == "Calibration.from_dict: missing keys ['count', 'mean']"
    np.testing.assert_allclose(cal.standardize([2.5, 1.0]), [2.0, -1.0])
    assert cal.standardize([2.5]).dtype == np.float32


def test_rm_gate_at_zero():
    cal = Calibration(0.0, 1.0, 2)
    z = np.array([0.0, 0.0, 0.4, -0.4], np.float32)
    acc = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
    got = rm_term(z, acc, np.ones(4, bool), HybridRewardConfig(rm_clip_tau=None), cal)
    np.testing.assert_allclose(got, [0.0, 0.0, 0.4, -0.4], atol=1e-7)  # z = 0 agrees with nothing
    assert got.dtype == np.float32
    got = rm_term(np.array([3.0, -3.0], np.float32), np.zeros(2), np.zeros(2, bool),
                  HybridRewardConfig(rm_clip_tau=2.5), cal)
    np.testing.assert_array_equal(got, [2.5, -2.5])  # no reference: kept, clipped


def test_compute_rewards_defaults_weights_and_checks():
    checker = StubChecker((True, "match", "4"), (False, "mismatch", "5"))
    responses = ["<think>r</think>\\boxed{4}", "no think \\boxed{5}"]
    out = compute_rewards(["p", "q"], responses, ["4", "4"], ["math", "math"], checker=checker,
                          scorer=ConstScorer([3.0, -3.0]), calibration=Calibration(1.0, 2.0, 9))
    # default config: weights 1, z = [1, -2] clipped to [1, -1], both agree with the rule
    np.testing.assert_allclose(out.rm, [1.0, -1.0])
    np.testing.assert_allclose(out.total, [1.0 + 1.0 + 1.0, 0.0 - 1.0 + 0.0])
    assert out.total.dtype == np.float32 and out.reason == ("match", "mismatch")
    assert out.extracted == ("4", "5")
    with pytest.raises(ValueError) as err:
        compute_rewards(["p", "q"], responses, ["4", "4"], ["math", "math"], checker=checker,
                        scorer=ConstScorer([3.0]), calibration=Calibration(1.0, 2.0, 9))
    assert str(err.value) == ("compute_rewards: reward model returned shape (1,) (want (2,)), "
                              "non-finite at []")
    with pytest.raises(ValueError) as err:
        compute_rewards(["p", "q"], responses, ["4", "4"], ["math", "math"], checker=checker,
                        scorer=ConstScorer([np.inf, 1.0]), calibration=Calibration(1.0, 2.0, 9))
    assert str(err.value) == ("compute_rewards: reward model returned shape (2,) (want (2,)), "
                              "non-finite at [0]")
    many = StubChecker(*[(True, "match", "4")] * 10)  # the message lists the first 8 bad rows
    with pytest.raises(ValueError) as err:
        compute_rewards(["p"] * 10, ["r"] * 10, ["4"] * 10, ["math"] * 10, checker=many,
                        scorer=ConstScorer([np.nan] * 10), calibration=Calibration(1.0, 2.0, 9))
    assert str(err.value).endswith("non-finite at [0, 1, 2, 3, 4, 5, 6, 7]")
    with pytest.raises(ValueError) as err:
        compute_rewards(["p"], responses[:1], ["4"], ["math"], checker=StubChecker((True, "match", "4")))
    assert str(err.value) == "compute_rewards: HybridRewardConfig.w_rm != 0 needs a RewardModelScorer"
    # w_rm = 0: no scorer needed, rm_raw and rm are zeros; the think tag opened by the prompt
    out = compute_rewards(["p"], ["r</think>4"], ["4"], ["math"], checker=StubChecker((True, "match", "4")),
                          config=HybridRewardConfig(w_rm=0.0, w_fmt=0.5, think_opened_by_prompt=True))
    np.testing.assert_allclose([out.rm_raw[0], out.rm[0], out.format[0], out.total[0]],
                               [0.0, 0.0, 1.0, 1.5])


def test_rm_term_without_calibration_names_the_fix():
    with pytest.raises(ValueError) as err:
        rm_term(np.zeros(1), np.zeros(1), np.ones(1, bool), HybridRewardConfig(), None)
    assert str(err.value) == "rm_term: rm_standardize=True needs a Calibration (see `calibrate`)"


@pytest.mark.parametrize("kw,message", [
    (dict(scope="some"), "config.reward.rm_scope must be one of ('all', 'mixed_groups'), got 'some'"),
    (dict(scale="token"), "config.reward.rm_scale must be one of ('group', 'batch'), got 'token'"),
    (dict(share_cap=1.0), "config.reward.rm_share_cap must be in [0, 1) (0 = off), got 1.0"),
])
def test_options_checks_exact_messages(kw, message):
    with pytest.raises(ValueError) as err:
        RMAdvantageOptions(**kw)
    assert str(err.value) == message


def test_options_from_config_and_defaults():
    cfg = types.SimpleNamespace(rm_scope="mixed_groups", rm_scale="batch", rm_share_cap=0.25)
    opts = RMAdvantageOptions.from_config(cfg)
    assert opts == RMAdvantageOptions("mixed_groups", "batch", 0.25) and not opts.is_default
    assert RMAdvantageOptions() == RMAdvantageOptions("all", "group", 0.0)
    RMAdvantageOptions(share_cap=0.0)  # the lower bound is allowed


def test_hybrid_advantages_defaults_and_group_size_checks():
    # ddof 1, eps 1e-4 by default: group [1, 0] -> std sqrt(0.5), A = +-0.5 / (sqrt(0.5) + eps)
    adv, m = hybrid_advantages(np.array([1.0, 0.0]), np.zeros(2), 2, RMAdvantageOptions())
    a = 0.5 / (np.sqrt(0.5) + 1e-4)
    np.testing.assert_allclose(adv, [a, -a], rtol=1e-6)
    assert adv.dtype == np.float32 and m == {"rm_adv_share": 0.0, "rm_scoped_groups": 0.0}
    with pytest.raises(ValueError) as err:
        hybrid_advantages(np.ones(2), np.zeros(2), 1, RMAdvantageOptions())
    assert str(err.value) == "hybrid_advantages: group_size 1 must be > std_ddof 1"
    adv, _ = hybrid_advantages(np.ones(2), np.zeros(2), 1, RMAdvantageOptions(), std_ddof=0)
    np.testing.assert_array_equal(adv, [0.0, 0.0])
    with pytest.raises(ValueError) as err:
        hybrid_advantages(np.ones(2), np.zeros(2), 0, RMAdvantageOptions())
    assert str(err.value) == "2 rewards do not split into groups of 0"
    # a tiny RM difference in an all-correct group: |A| sums to ~0.01 (< 1), all of it RM
    adv, m = hybrid_advantages(np.ones(2), np.array([1e-6, 0.0]), 2, RMAdvantageOptions())
    a = 5e-7 / (np.sqrt(5e-13) + 1e-4)
    np.testing.assert_allclose(adv, [a, -a], rtol=1e-5)
    assert m["rm_adv_share"] == 1.0
    # all answers equal and no RM term: every advantage and the share are 0
    adv, m = hybrid_advantages(np.ones(4), np.zeros(4), 2, RMAdvantageOptions(scope="mixed_groups"))
    np.testing.assert_array_equal(adv, np.zeros(4))
    assert m == {"rm_adv_share": 0.0, "rm_scoped_groups": 1.0}
