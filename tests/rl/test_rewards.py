"""Answer extraction / checking, format reward, RM calibration and the hybrid reward."""

import math
import time

import numpy as np
import pytest

from r1v2_jax.rl.answers import (
    AnswerCheckConfig,
    InvalidGoldError,
    check_answer,
    extract_final_answer,
    find_choice_letter,
    last_boxed,
)
from r1v2_jax.rl.rewards import (
    AnswerChecker,
    Calibration,
    HybridRewardConfig,
    RewardModelScorer,
    calibrate,
    compute_rewards,
    format_reward,
    rm_term,
)

CFG = AnswerCheckConfig()
R = "<think>\nLet me compute.\n</think>\n"  # a well-formed reasoning prefix

# (response, gold, answer_type, correct, reason)
TABLE = [
    (R + "So the result is \\boxed{\\frac{1}{2}}.", "0.5", "math", True, "match"),
    (R + "\\boxed{\\dfrac{1}{2}}", "\\frac12", "math", True, "match"),
    (R + "The answer is $\\dfrac{1}{2}$.", "1/2", "math", True, "match"),
    (R + "\\dfrac{1}{2}", "\\frac{1}{2}", "math", True, "match"),  # bare LaTeX last line
    (R + "\\boxed{0.5}", "\\frac{1}{3}", "math", False, "mismatch"),
    (R + "\\boxed{2^{10}}", "1024", "math", True, "match"),
    (R + "\\boxed{x^2+2x+1}", "(x+1)^2", "math", True, "match"),
    (R + "\\boxed{x^2+2x}", "(x+1)^2", "math", False, "mismatch"),
    (R + "\\boxed{x = 3}", "3", "math", True, "match"),
    (R + "\\boxed{\\frac{\\pi}{2}}", "\\pi/2", "math", True, "match"),
    (R + "\\boxed{\\{1, 2\\}}", "\\{2,1\\}", "math", True, "match"),
    (R + "first \\boxed{3} then corrected \\boxed{4}", "4", "math", True, "match"),  # last box
    (R + "\\boxed{3}", "$3$", "math", True, "match"),  # gold with delimiters
    (R + "\\boxed{\\frac{1}{3}}", "0.33333", "number", True, "match"),  # rel 1e-5 < 1e-4
    (R + "\\boxed{\\frac{1}{3}}", "0.333", "number", False, "mismatch"),  # rel 1e-3 > 1e-4
    (R + "The total is\n1,000", "1000", "number", True, "match"),
    (R + "\\boxed{50\\%}", "50", "number", True, "match"),
    (R + "\\boxed{\\sqrt{2}/2}", "0.70710678", "number", True, "match"),
    (R + "\\boxed{abc}", "7", "number", False, "not_a_finite_number"),
    (R + "B", "B", "choice", True, "match"),
    (R + "(B)", "B", "choice", True, "match"),
    (R + "B.", "(B)", "choice", True, "match"),
    (R + "The answer is B", "B", "choice", True, "match"),
    (R + "Looking at the options, the answer is (C).\nDone.", "C", "choice", True, "match"),
    (R + "Answer: **D**", "D", "choice", True, "match"),
    (R + "B. 42 apples", "B", "choice", True, "match"),
    (R + "\\boxed{\\text{(C)}}", "C", "choice", True, "match"),
    (R + "\\boxed{A}", "B", "choice", False, "mismatch"),
    (R + "I am not sure", "C", "choice", False, "no_option_letter"),
    (R + "\\boxed{Paris}", "paris", "text", True, "match"),
    (R + "\\boxed{\\text{Blue  Whale}}", "blue whale.", "text", True, "match"),
    (R + "London", "Paris", "text", False, "mismatch"),
    ("no reasoning tags \\boxed{1}", "1", "math", False, "no_think_close"),
    (R + "   \n  ", "1", "math", False, "empty_answer"),
    (R + "\\boxed{" + "\\frac{1}{" * 12000 + "2" + "}" * 12000 + "}", "1", "math", False,
     "answer_too_long (120001 > 1000 chars)"),
    (R + "\\boxed{" * 100_000 + "\n7", "7", "math", True, "match"),  # unclosed boxes: last line
    (R + "x" * 100_000, "7", "math", False, "answer_too_long (100000 > 1000 chars)"),
    # long blank runs once made the option-letter regex backtrack polynomially
    (R + "The answer is" + " \n" * 50_000 + "(B)", "B", "choice", True, "match"),
    (R + "The answer" + " " * 100_000 + "?", "B", "choice", False, "answer_too_long (100011 > 1000 chars)"),
]


@pytest.mark.parametrize("response,gold,answer_type,correct,reason", TABLE,
                         ids=[f"{i:02d}-{row[2]}-{row[4].split()[0]}" for i, row in enumerate(TABLE)])
def test_answer_table(response, gold, answer_type, correct, reason):
    got = check_answer(response, gold, answer_type, CFG)
    assert (got.correct, got.reason) == (correct, reason)
    assert got.score == (1.0 if correct else 0.0)


def test_extraction_helpers():
    assert last_boxed("a \\boxed{1} b \\boxed{\\frac{1}{2}} c") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{\\{1\\}}") == "\\{1\\}"  # escaped braces do not count
    assert last_boxed("\\boxed{\\boxed{5}}") == "\\boxed{5}"  # the box that closes last
    assert last_boxed("\\boxed{1} \\boxed{2") == "1"  # an unclosed box is ignored
    assert last_boxed("no box") is None
    assert extract_final_answer("x\n\nfinal line  \n\n", "math", "ABCD") == ("final line", "last_line")
    assert extract_final_answer("so (C) it is\n42", "choice", "ABCD") == ("42", "last_line")
    assert extract_final_answer("The answer is C\nthanks", "choice", "ABCD") == ("C", "letter")
    assert find_choice_letter("E", "ABCD") is None  # not one of the options
    assert find_choice_letter("the answer is a triangle", "ABCD") is None  # lower-case "a"


def test_bad_reference_is_an_error_not_a_zero():
    with pytest.raises(InvalidGoldError, match="choice gold"):
        check_answer(R + "B", "banana", "choice", CFG)
    with pytest.raises(InvalidGoldError, match="not a number"):
        check_answer(R + "1", "seven", "number", CFG)
    with pytest.raises(ValueError, match="answer_type"):
        check_answer(R + "1", "1", "maths", CFG)
    with pytest.raises(ValueError, match="math_verify_timeout_s"):
        AnswerCheckConfig(math_verify_timeout_s=0)


def test_soft_timeout_in_process():
    got = check_answer(R + "\\boxed{9^{9^{9^{9}}}}", "1", "math", AnswerCheckConfig(math_verify_timeout_s=1))
    assert (got.correct, got.reason) == (False, "timeout (math-verify)")


@pytest.fixture(scope="module")
def checker():
    with AnswerChecker(AnswerCheckConfig(num_workers=2)) as c:
        yield c


def test_checker_matches_in_process_results(checker):
    rows = TABLE[:6] + TABLE[19:23] + TABLE[-4:]
    got = checker.check_batch([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    assert [(g.correct, g.reason) for g in got] == [(r[3], r[4]) for r in rows]
    none = checker.check_batch([R + "\\boxed{1}"], [None], [None])[0]
    assert (none.correct, none.reason) == (False, "no_reference")
    with pytest.raises(InvalidGoldError, match="sample 1"):
        checker.check_batch([R + "1", R + "1"], ["1", "seven"], ["number", "number"])


def test_hard_limit_kills_a_hanging_check_and_recovers(caplog):
    # math-verify's own limit is set far away: only the process kill can stop this check
    cfg = AnswerCheckConfig(check_timeout_s=1.0, math_verify_timeout_s=60)
    with AnswerChecker(cfg) as c:
        responses = [R + "\\boxed{9^{9^{9^{9}}}}", R + "\\boxed{\\frac12}"]
        got = c.check_batch(responses, ["1", "0.5"], ["math", "math"])
        assert (got[0].correct, got[0].reason) == (False, "timeout (hard limit 1.0 s)")
        assert (got[1].correct, got[1].reason) == (True, "match")  # restarted worker
    assert "sample 0: score 0, timeout (hard limit 1.0 s)" in caplog.text


def test_batch_limit_bounds_hostile_answers_and_keeps_the_others_scores(caplog):
    # 16 answers that only a process kill can stop (math-verify's limit is far away), after
    # 4 ordinary ones: without a batch limit this batch takes 16 / 2 workers x 30 s
    cfg = AnswerCheckConfig(check_timeout_s=30.0, batch_timeout_s=3.0, math_verify_timeout_s=60,
                            num_workers=2)
    ordinary = TABLE[:2] + TABLE[19:21]
    responses = [r[0] for r in ordinary] + [R + "\\boxed{9^{9^{9^{9}}}}"] * 16
    golds = [r[1] for r in ordinary] + ["1"] * 16
    types = [r[2] for r in ordinary] + ["math"] * 16
    with AnswerChecker(cfg) as c:
        c.check_batch([R + "1"], ["1"], ["number"])  # workers up before the clock
        start = time.monotonic()
        got = c.check_batch(responses, golds, types)
        elapsed = time.monotonic() - start
        assert elapsed < 3.0 + 1.5, elapsed
        sequential = [check_answer(r[0], r[1], r[2], cfg) for r in ordinary]
        assert got[:4] == sequential  # same scores, reasons and extracted answers
        assert [g.reason for g in got[4:]] == ["timeout (batch limit 3.0 s)"] * 16
        assert not any(g.correct for g in got[4:])
        again = c.check_batch([R + "\\boxed{\\frac12}"], ["0.5"], ["math"])  # restarted workers
        assert (again[0].correct, again[0].reason) == (True, "match")
    assert "batch limit of 3.0 s reached, 16 of 20 checks unfinished" in caplog.text


def test_a_batch_that_raises_leaves_no_stale_result_for_the_next():
    # sample 0 is still being checked (1 s soft timeout) when sample 1's bad gold raises
    with AnswerChecker(AnswerCheckConfig(num_workers=2, math_verify_timeout_s=1)) as c:
        with pytest.raises(InvalidGoldError, match="sample 1"):
            c.check_batch([R + "\\boxed{9^{9^{9^{9}}}}", R + "1"], ["1", "seven"], ["math", "number"])
        got = c.check_batch([R + "\\boxed{2}", R + "\\boxed{3}"], ["2", "3"], ["number", "number"])
        assert [(g.correct, g.reason) for g in got] == [(True, "match")] * 2


def test_worker_that_cannot_start_raises():
    with AnswerChecker(AnswerCheckConfig(worker_memory_limit_mb=16)) as c:
        with pytest.raises(RuntimeError, match="worker died on start-up"):
            c.check_batch([R + "1"], ["1"], ["number"])


@pytest.mark.parametrize("response,opened,expected", [
    ("<think>reasoning</think>\nThe answer is 4.", False, 1.0),
    ("  <think>\nr\n</think>\n\\boxed{4}", False, 1.0),
    ("<think>reasoning</think>\n   ", False, 0.0),  # empty answer
    ("reasoning</think> 4", False, 0.0),  # no opening tag
    ("reasoning</think> 4", True, 1.0),  # the prompt opened <think>
    ("<think>a</think><think>b</think> 4", False, 0.0),  # tags twice
    ("<think>a</think> 4 </think>", False, 0.0),
    ("<think>never closed 4", False, 0.0),
    ("The answer is 4", False, 0.0),
    ("<think>r</think> 4", True, 0.0),  # a second <think> after the prompt's
])
def test_format_reward(response, opened, expected):
    assert format_reward(response, opened) == expected


def test_calibration():
    cal = calibrate([1.0, 2.0, 3.0, 4.0])
    assert (cal.mean, cal.count) == (2.5, 4) and math.isclose(cal.std, math.sqrt(1.25))
    assert math.isclose(calibrate([1.0, 2.0, 3.0, 4.0], ddof=1).std, math.sqrt(5 / 3))
    np.testing.assert_allclose(cal.standardize(np.array([2.5, 2.5 + math.sqrt(1.25)])), [0.0, 1.0], atol=1e-6)
    assert Calibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(ValueError, match="std 0"):
        calibrate([3.0, 3.0, 3.0])
    with pytest.raises(ValueError, match="finite"):
        calibrate([1.0, float("nan"), 2.0])


def test_rm_term_hand_computed():
    cal = Calibration(mean=2.0, std=0.5, count=10)
    raw = np.array([3.0, 1.0, 2.2, 1.6, 0.0, 2.4], np.float32)  # z = 2, -2, 0.4, -0.8, -4, 0.8
    acc = np.array([1, 1, 0, 0, 1, 0], np.float32)
    has_ref = np.array([True, True, True, True, True, False])
    ungated = rm_term(raw, acc, has_ref, HybridRewardConfig(rm_clip_tau=1.0, rm_gate="none"), cal)
    np.testing.assert_allclose(ungated, [1.0, -1.0, 0.4, -0.8, -1.0, 0.8], atol=1e-6)
    gated = rm_term(raw, acc, has_ref, HybridRewardConfig(rm_clip_tau=1.0, rm_gate="agree"), cal)
    # kept: correct & z>0 (0), wrong & z<0 (3), no reference (5); the others disagree -> 0
    np.testing.assert_allclose(gated, [1.0, 0.0, 0.0, -0.8, 0.0, 0.8], atol=1e-6)
    raw_only = rm_term(raw, acc, has_ref, HybridRewardConfig(rm_standardize=False, rm_clip_tau=None,
                                                             rm_gate="none"), None)
    np.testing.assert_allclose(raw_only, raw)
    with pytest.raises(ValueError, match="Calibration"):
        rm_term(raw, acc, has_ref, HybridRewardConfig(), None)


class LengthScorer:
    """Test double: the RM score is the response length in characters."""

    def score(self, prompts, responses, images):
        return np.array([len(r) for r in responses], np.float32)


def test_compute_rewards_hand_computed(checker):
    assert isinstance(LengthScorer(), RewardModelScorer)
    responses = [
        "<think>r</think>\\boxed{4}",  # correct, format 1, len 25 -> z = (25-20)/5 = 1
        "<think>r</think>\\boxed{5}",  # wrong, format 1, z = 1 disagrees -> rm 0
        "r</think>\\boxed{5} nope",  # wrong, format 0, len 23 -> z = 0.6 disagrees -> 0
        "<think>r</think>x",  # wrong, format 1, len 17 -> z = -0.6 agrees
        "<think>r</think>" + "y" * 100,  # no reference, format 1, z = 19.2 -> clipped 1.5
    ]
    cfg = HybridRewardConfig(w_acc=2.0, w_rm=0.5, w_fmt=0.25, rm_clip_tau=1.5, rm_gate="agree")
    out = compute_rewards(["p"] * 5, responses, ["4", "4", "4", "4", None], ["math"] * 4 + [None],
                          checker=checker, config=cfg, scorer=LengthScorer(),
                          calibration=Calibration(20.0, 5.0, 100))
    np.testing.assert_allclose(out.accuracy, [1, 0, 0, 0, 0])
    np.testing.assert_allclose(out.format, [1, 1, 0, 1, 1])
    np.testing.assert_allclose(out.rm_raw, [25, 25, 23, 17, 116])
    np.testing.assert_allclose(out.rm, [1.0, 0.0, 0.0, -0.6, 1.5], atol=1e-6)
    np.testing.assert_allclose(out.total, [2 + 0.5 + 0.25, 0.25, 0.0, -0.3 + 0.25, 0.75 + 0.25], atol=1e-6)
    assert out.reason == ("match", "mismatch", "mismatch", "mismatch", "no_reference")
    assert out.extracted[:2] == ("4", "5")
    with pytest.raises(ValueError, match="RewardModelScorer"):
        compute_rewards(["p"], responses[:1], ["4"], ["math"], checker=checker, config=cfg)
    rule_only = compute_rewards(["p"] * 2, responses[:2], ["4", "4"], ["math"] * 2, checker=checker,
                                config=HybridRewardConfig(w_rm=0.0))
    np.testing.assert_allclose(rule_only.total, [2.0, 1.0])


def test_reward_model_bad_output_is_an_error(checker):
    class NaNScorer:
        def score(self, prompts, responses, images):
            return np.array([np.nan], np.float32)

    with pytest.raises(ValueError, match="non-finite"):
        compute_rewards(["p"], [R + "1"], ["1"], ["number"], checker=checker, scorer=NaNScorer(),
                        calibration=Calibration(0.0, 1.0, 2))
