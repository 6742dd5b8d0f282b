"""AnswerCheckConfig (documented defaults, range checks with exact messages) and the
extraction / comparison options each set away from its default, so an ignored one shows."""

import dataclasses

import pytest

from r1v2_jax.rl.answers import (AnswerCheck, AnswerCheckConfig, check_answer,
                                 extract_final_answer, last_boxed, validate_gold)

R = "<think>r</think>\n"


def test_documented_defaults():
    # docs/rewards_and_ssb.md: limits 5 s / 120 s / 2 s, 1000 chars, A-J, 8192 MB, spawn
    c = AnswerCheckConfig()
    assert (c.check_timeout_s, c.batch_timeout_s, c.math_verify_timeout_s) == (5.0, 120.0, 2)
    assert (c.max_answer_chars, c.require_think_close, c.rel_tol, c.abs_tol) == (1000, True, 1e-4, 1e-8)
    assert (c.choice_letters, c.float_rounding, c.num_workers) == ("ABCDEFGHIJ", 6, 1)
    assert (c.start_method, c.worker_start_timeout_s, c.worker_memory_limit_mb) == ("spawn", 120.0, 8192)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.rel_tol = 0.1
    check = AnswerCheck(False, "mismatch")
    assert check.extracted is None and check.score == 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        check.correct = True


@pytest.mark.parametrize("kw", [dict(check_timeout_s=1e-3), dict(batch_timeout_s=None),
                                dict(batch_timeout_s=1e-3), dict(math_verify_timeout_s=None),
                                dict(math_verify_timeout_s=1), dict(max_answer_chars=1),
                                dict(num_workers=1), dict(choice_letters="AB")])
def test_boundary_values_are_accepted(kw):
    assert getattr(AnswerCheckConfig(**kw), next(iter(kw))) == next(iter(kw.values()))


@pytest.mark.parametrize("kw,message", [
    (dict(check_timeout_s=0.0), "AnswerCheckConfig.check_timeout_s must be > 0, got 0.0"),
    (dict(batch_timeout_s=0.0), "AnswerCheckConfig.batch_timeout_s must be > 0 or None, got 0.0"),
    (dict(math_verify_timeout_s=0),
     "AnswerCheckConfig.math_verify_timeout_s must be an int >= 1 or None, got 0"),
    (dict(math_verify_timeout_s=1.5),
     "AnswerCheckConfig.math_verify_timeout_s must be an int >= 1 or None, got 1.5"),
    (dict(max_answer_chars=0), "AnswerCheckConfig.max_answer_chars and num_workers must be >= 1"),
    (dict(num_workers=0), "AnswerCheckConfig.max_answer_chars and num_workers must be >= 1"),
    (dict(choice_letters=""), "AnswerCheckConfig.choice_letters must be upper-case letters, got ''"),
    (dict(choice_letters="abc"),
     "AnswerCheckConfig.choice_letters must be upper-case letters, got 'abc'"),
])
def test_out_of_range_values_are_rejected_by_name(kw, message):
    with pytest.raises(ValueError) as err:
        AnswerCheckConfig(**kw)
    assert str(err.value) == message


def test_validate_gold_messages():
    with pytest.raises(ValueError) as err:
        validate_gold("1", "integer", where="row 3: ")
    assert str(err.value) == ("row 3: answer_type must be one of ('math', 'number', 'choice', "
                              "'text'), got 'integer'")
    with pytest.raises(ValueError) as err:
        validate_gold("  ", "math")
    assert str(err.value) == "gold answer must be a non-empty string, got '  '"
    validate_gold("x", "text")


def test_extraction_details():
    assert last_boxed("\\fbox{7} then \\boxed{8} then \\fbox{9}") == "9"
    assert last_boxed("a \\\\ b \\boxed{\\\\x}") == "\\\\x"  # an escaped backslash is skipped
    assert extract_final_answer("\\boxed{ }\nlast line", "math", "ABCD") == ("last line", "last_line")
    assert extract_final_answer("\\boxed{ 5 }", "math", "ABCD") == ("5", "boxed")
    assert extract_final_answer("answer is (B)\nbye", "choice", "ABCD") == ("B", "letter")
    assert extract_final_answer("answer is (B)\nbye", "text", "ABCD") == ("bye", "last_line")
    assert extract_final_answer(" \n \n", "text", "ABCD") is None


@pytest.mark.parametrize("response,gold,answer_type,kw,expected", [
    # each option away from its default changes the verdict of this case
    ("no tags \\boxed{4}", "4", "math", dict(require_think_close=False), (True, "match")),
    ("no tags \\boxed{4}", "4", "math", dict(), (False, "no_think_close")),
    (R + "\\boxed{12345}", "12345", "math", dict(max_answer_chars=5), (True, "match")),
    (R + "\\boxed{123456}", "123456", "math", dict(max_answer_chars=5),
     (False, "answer_too_long (6 > 5 chars)")),
    (R + "\\boxed{1.01}", "1", "number", dict(rel_tol=0.02), (True, "match")),
    (R + "\\boxed{1.01}", "1", "number", dict(), (False, "mismatch")),
    (R + "\\boxed{0.001}", "0", "number", dict(abs_tol=0.01), (True, "match")),
    (R + "\\boxed{0.001}", "0", "number", dict(), (False, "mismatch")),
    (R + "The answer is K", "K", "choice", dict(choice_letters="ABCDEFGHIJK"), (True, "match")),
    (R + "The answer is (A)", "B", "choice", dict(), (False, "mismatch")),
    (R + "nothing here", "B", "choice", dict(), (False, "no_option_letter")),
    (R + "\\boxed{0.3333334}", "1/3", "math", dict(float_rounding=2), (True, "match")),
    (R + "\\boxed{\\text{Blue}}", "blue", "text", dict(), (True, "match")),
    (R + "\\boxed{Red}", "blue", "text", dict(), (False, "mismatch")),
    # an empty box is no boxed answer; the last line is then the box itself, which
    # math-verify cannot read
    (R + "\\boxed{}", "4", "math", dict(), (False, "unparsable_answer")),
])
def test_options_change_the_verdict(response, gold, answer_type, kw, expected):
    got = check_answer(response, gold, answer_type, AnswerCheckConfig(**kw))
    assert (got.correct, got.reason) == expected


@pytest.mark.parametrize("exc,reason", [("timeout", "timeout (math-verify)"),
                                        (RecursionError, "error (RecursionError)")])
def test_a_failing_comparison_scores_zero_with_its_cause(monkeypatch, exc, reason):
    from math_verify.errors import TimeoutException

    import r1v2_jax.rl.answers as answers

    def fail(*_):
        raise TimeoutException() if exc == "timeout" else exc()

    monkeypatch.setattr(answers, "_compare", fail)
    got = check_answer(R + "\\boxed{4}", "4", "math", AnswerCheckConfig())
    assert (got.correct, got.reason, got.extracted) == (False, reason, "4")
