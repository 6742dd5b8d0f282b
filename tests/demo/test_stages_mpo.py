"""The reward model's synthetic pairs: each corruption kind changes what it names, only that."""

import re

import numpy as np
import pytest

from r1v2_jax.data import synthetic
from r1v2_jax.demo import stages_mpo

EXAMPLES = synthetic.make_dataset(7, 60, heldout_fraction=0.0).train


def described(trace: str) -> list[str]:
    """The 'size colour kind' phrases of the trace's description sentence."""
    sentence = trace.split("I see ", 1)[1].split(". ", 1)[0]
    return re.split(r", | and ", sentence)


def boxed(trace: str) -> str:
    return trace.rsplit("\\boxed{", 1)[1].split("}", 1)[0]


@pytest.mark.parametrize("kind", [k for k in stages_mpo.CORRUPTIONS if k != "shortcut"])
def test_each_corruption_changes_what_it_names(kind):
    rng = np.random.default_rng(3)
    for ex in EXAMPLES:
        clean = synthetic.reasoning_trace(ex.scene, ex.question)
        bad = stages_mpo.corrupted_trace(ex.scene, ex.question, kind, rng)
        before, after = described(clean), described(bad)
        assert (boxed(bad) != ex.question.answer) == (kind in ("answer", "both")), (kind, bad)
        reasoning = bad.rsplit("\\boxed", 1)[0]  # a wrong colour answer names an absent colour
        assert synthetic.hallucinated(reasoning, ex.scene, ex.question.text) == (kind != "answer")
        # the reasoning after the description is the clean trace's
        assert bad.split(". ", 1)[1].rsplit("\\boxed", 1)[0] == \
            clean.split(". ", 1)[1].rsplit("\\boxed", 1)[0]
        if kind in ("hallucination", "both"):  # one shape added, the others kept
            assert len(after) == len(before) + 1
            assert all(after.count(p) >= before.count(p) for p in before)
        elif kind == "misdescribe":  # one present shape named wrongly, in its place
            assert len(after) == len(before)
            assert sum(a != b for a, b in zip(before, after)) == 1, (before, after)
        else:
            assert after == before


def test_misdescribe_changes_one_shape_and_keeps_its_place():
    ex = EXAMPLES[0]
    fake = stages_mpo.misdescribed_scene(ex.scene, ex.question.text, np.random.default_rng(1))
    changed = [(a, b) for a, b in zip(ex.scene.shapes, fake.shapes) if a != b]
    assert len(changed) == 1
    (a, b), = changed
    assert (a.cx, a.cy, a.radius) == (b.cx, b.cy, b.radius)
    assert (a.size, a.color, a.kind) != (b.size, b.color, b.kind)


def test_shortcut_is_a_guess_of_the_right_answer():
    ex = EXAMPLES[5]
    bad = stages_mpo.corrupted_trace(ex.scene, ex.question, "shortcut", np.random.default_rng(0))
    assert synthetic.is_shortcut(bad) and boxed(bad) == ex.question.answer
    assert not synthetic.is_shortcut(synthetic.reasoning_trace(ex.scene, ex.question))


def test_hallucination_penalty_lowers_only_the_flagged_rewards():
    def score(examples, responses):
        return {"reward": [1.5, 0.5, 1.0], "accuracy": [1, 0, 1],
                "hallucinated": np.asarray([True, False, True])}
    out = stages_mpo.penalize_hallucination(score, 0.75)(None, None)
    np.testing.assert_allclose(out["reward"], [0.75, 0.5, 0.25])
    assert out["accuracy"] == [1, 0, 1]
