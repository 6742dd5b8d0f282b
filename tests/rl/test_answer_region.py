"""The final answer is read after the LAST `</think>`: a response that closes the tag twice
(a draft answer, more thinking, then the real answer) is judged on what follows the second."""

import pytest

from r1v2_jax.rl.answers import AnswerCheckConfig, answer_region, check_answer

CFG = AnswerCheckConfig()
TWICE_WRONG = "<think>draft</think>\\boxed{4}\nhmm, recheck</think>\nI give up"
TWICE_RIGHT = "<think>maybe \\boxed{4}</think>\\boxed{3} is wrong</think>\nThe total is\n4"


def test_answer_region_is_after_the_last_close():
    assert answer_region(TWICE_WRONG, True) == "\nI give up"
    assert answer_region("a</think>b</think>c</think>", True) == ""
    assert answer_region("</think>4", True) == "4"  # the tag at position 0 counts
    assert answer_region("no tag", True) is None
    assert answer_region("no tag", False) == "no tag"


@pytest.mark.parametrize("response,gold,answer_type,correct,reason", [
    # after the first </think> the box says 4; after the last there is no answer to match
    (TWICE_WRONG, "4", "math", False, "mismatch"),
    # after the first </think> the box says 3; after the last the last line says 4
    (TWICE_RIGHT, "4", "number", True, "match"),
    # after the first </think> the boxed option is A; after the last no option is named
    ("<think>r</think>\\boxed{A}\n</think>\nI am not sure", "A", "choice", False, "no_option_letter"),
])
def test_two_think_closes(response, gold, answer_type, correct, reason):
    got = check_answer(response, gold, answer_type, CFG)
    assert (got.correct, got.reason) == (correct, reason)
