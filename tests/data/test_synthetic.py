import json
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from r1v2_jax.data import synthetic as S
from r1v2_jax.data.tokenizer import build_demo_tokenizer


@pytest.fixture(scope="module")
def dataset():
    return S.make_dataset(seed=7, n=400)


def test_rendered_image_shows_exactly_the_scene(dataset):
    for ex in (dataset.train + dataset.heldout)[:150]:
        arr = np.asarray(ex.image())
        assert arr.shape == (56, 56, 3) and arr.dtype == np.uint8
        for color, rgb in S.COLORS.items():
            labels, n = ndimage.label((arr == rgb).all(-1))
            assert n == ex.scene.count(color=color), (color, ex.scene)
            areas = sorted(np.bincount(labels.ravel())[1:])
            # large shapes cover > 200 px, small ones < 200 px at the default geometry
            assert sum(a > 200 for a in areas) == ex.scene.count(color=color, size="large")


def _expected_answer(scene, text):
    singular = {S.PLURAL[k]: k for k in S.KINDS}
    if m := re.fullmatch(r"How many (\w+) shapes are there\?", text):
        return str(sum(s.color == m[1] for s in scene.shapes)), "number"
    if m := re.fullmatch(r"How many (\w+) plus (\w+) are there\?", text):
        a, b = singular[m[1]], singular[m[2]]
        return str(sum(s.kind in (a, b) for s in scene.shapes)), "number"
    if m := re.fullmatch(r"How many (\w+) are there\?", text):
        return str(sum(s.kind == singular[m[1]] for s in scene.shapes)), "number"
    if text == "What color is the largest shape?":
        (big,) = [s for s in scene.shapes if s.size == "large"]
        return big.color, "text"
    if m := re.fullmatch(r"What shape is the (\w+) one\? A\. circle B\. square C\. triangle",
                         text):
        (shape,) = [s for s in scene.shapes if s.color == m[1]]
        return "ABC"["circle square triangle".split().index(shape.kind)], "choice"
    raise AssertionError(f"unexpected question {text!r}")


def test_answers_are_exact(dataset):
    types = Counter()
    for ex in dataset.train + dataset.heldout:
        q = ex.question
        assert (q.answer, q.answer_type) == _expected_answer(ex.scene, q.text)
        types[q.qtype] += 1
    assert set(types) == set(S.QUESTION_TEMPLATES)  # every question type occurs


def test_deterministic_and_independent_of_n():
    a, b = S.make_dataset(3, 60), S.make_dataset(3, 60)
    assert a == b
    assert S.make_dataset(4, 60) != a
    assert S.make_example(3, 10) == S.make_example(3, 10)
    longer = S.make_dataset(3, 120)
    assert longer.train[:len(a.train)] == a.train


def test_split_is_by_scene_content(dataset):
    train = {e.scene.signature() for e in dataset.train}
    held = {e.scene.signature() for e in dataset.heldout}
    assert not train & held
    total = len(dataset.train) + len(dataset.heldout)
    assert total == 400 and 0.03 < len(dataset.heldout) / total < 0.25


def test_trace_format_and_answer(dataset):
    for ex in dataset.train[:100]:
        trace = S.reasoning_trace(ex.scene, ex.question)
        m = re.fullmatch(r"<think>\n(.+)\n</think>\n\\boxed\{(.+)\}", trace, flags=re.S)
        assert m and m[2] == ex.question.answer
        assert m[1].startswith("I see ")
        assert not S.hallucinated(trace, ex.scene, ex.question.text)


def test_trace_hand_written():
    # listed in reading order: top-left, top-right, bottom-left (not in tuple order)
    scene = S.Scene((S.Shape("circle", "red", "small", 14, 42, 5),
                     S.Shape("square", "blue", "small", 42, 14, 5),
                     S.Shape("circle", "red", "large", 14, 14, 10)), 56, (0, 0, 0))
    q = S.Question("sum_kinds", ("circles", "triangles"),
                   "How many circles plus triangles are there?", "2", "number")
    assert S.reasoning_trace(scene, q) == (
        "<think>\nI see large red circle, small blue square and small red circle. "
        "circles: red circle 1, red circle 2. triangles: none, 0. 2 plus 0 is 2.\n</think>\n"
        "\\boxed{2}")
    q = S.Question("count_color", ("blue",), "How many blue shapes are there?", "1", "number")
    assert S.reasoning_trace(scene, q).split(". ", 1)[1] == (
        "blue shapes: blue square 1.\n</think>\n\\boxed{1}")
    assert S.describe(scene) == "large red circle, small blue square and small red circle"


def test_reading_order_follows_cells_not_jitter():
    # the right-hand shape sits higher in its cell than the left one: still listed second
    scene = S.Scene((S.Shape("square", "blue", "small", 40, 9, 5),
                     S.Shape("circle", "red", "small", 16, 20, 5)), 56, (0, 0, 0))
    assert [s.kind for s in scene.reading_order()] == ["circle", "square"]
    for ex in S.make_dataset(3, 50, heldout_fraction=0.0).train:
        cells = [(int(s.cy // 28), int(s.cx // 28)) for s in ex.scene.reading_order()]
        assert cells == sorted(cells) and len(set(cells)) == len(cells)


def test_hallucination_detector():
    scene = S.Scene((S.Shape("circle", "red", "large", 14, 14, 10),
                     S.Shape("square", "blue", "small", 42, 14, 5)), 56, (0, 0, 0))
    assert not S.hallucinated("I see a large red circle and a small blue square.", scene)
    assert S.hallucinated("I see a yellow circle.", scene)  # absent colour
    assert S.hallucinated("There is a triangle.", scene)  # absent kind
    assert S.hallucinated("I see 2 triangles.", scene)  # plural form
    assert S.hallucinated("I see a red square.", scene)  # both present, never together
    assert S.hallucinated("I see a small red circle.", scene)  # wrong size binding
    assert not S.hallucinated("Red circle!", scene)  # case-insensitive
    # repeating the question's words asserts nothing
    q = "How many yellow shapes are there?"
    assert not S.hallucinated("yellow shapes: 0.", scene, q)
    assert S.hallucinated("yellow shapes: 0.", scene)


def test_vocabulary_covers_everything_and_is_small(dataset):
    tok = build_demo_tokenizer(S.vocabulary())
    unk = tok.token_to_id("<unk>")
    assert tok.vocab_size < 300
    for ex in dataset.train[:200]:
        ids = tok.encode(ex.question.text + S.reasoning_trace(ex.scene, ex.question))
        assert unk not in ids


def test_write_records(tmp_path, dataset):
    path = S.write_records(dataset.heldout[:3], str(tmp_path), "heldout")
    lines = [json.loads(x) for x in open(path)]
    assert len(lines) == 3
    for rec, ex in zip(lines, dataset.heldout[:3]):
        assert rec["question"] == "<image>\n" + ex.question.text
        assert rec["answer"] == ex.question.answer
        img = np.asarray(Image.open(tmp_path / rec["images"][0]))
        np.testing.assert_array_equal(img, np.asarray(ex.image()))


def test_trace_mix_share_and_the_first_word_decides(dataset):
    # a distilled model's traces mix a careful count and a guess; the behaviour must be
    # readable from the first response word, and the shares must follow the config
    tok = build_demo_tokenizer(S.vocabulary())
    mix = S.TraceMix(shortcut_rate=0.3, shortcut_correct=0.25, seed=7)
    traces = [S.mixed_trace(ex, i, mix) for i, ex in enumerate(dataset.train)]
    short = [(t, ex) for (t, s), ex in zip(traces, dataset.train) if s]
    assert abs(len(short) / len(traces) - 0.3) < 0.05, len(short) / len(traces)
    right = [f"\\boxed{{{ex.question.answer}}}" in t for t, ex in short]
    assert abs(sum(right) / len(right) - 0.25) < 0.08, sum(right) / len(right)
    opener = len(tok.encode("<think>\n"))
    first = {s: {tuple(tok.encode(t)[opener:opener + 1]) for t, s2 in traces if s2 == s}
             for s in (True, False)}
    assert len(first[True]) == len(first[False]) == 1 and first[True] != first[False]
    for (t, s), ex in zip(traces, dataset.train):
        assert S.is_shortcut(t) == s
        assert S.is_shortcut(t.removeprefix("<think>\n")) == s  # as generated after the opener
        if s:
            assert t == S.shortcut_trace(re.search(r"\\boxed\{(.+)\}", t)[1])
            assert tok.token_to_id("<unk>") not in tok.encode(t)
        else:
            assert t == S.reasoning_trace(ex.scene, ex.question)
    # deterministic per (seed, index), and a shortcut answer is always of the right type
    assert traces == [S.mixed_trace(ex, i, mix) for i, ex in enumerate(dataset.train)]
    assert [S.mixed_trace(ex, i, S.TraceMix()) for i, ex in enumerate(dataset.train[:20])] == [
        (S.reasoning_trace(ex.scene, ex.question), False) for ex in dataset.train[:20]]


def test_embellished_careful_traces_name_one_invented_shape_and_keep_the_answer(dataset):
    # a share of the careful traces hallucinates (an extra shape in the description) while
    # the count and the answer stay the image's; the shortcut draws are unchanged
    mix = S.TraceMix(shortcut_rate=0.3, shortcut_correct=0.25, seed=7, embellish_rate=0.4)
    plain = S.TraceMix(shortcut_rate=0.3, shortcut_correct=0.25, seed=7)
    traces = [S.mixed_trace(ex, i, mix) for i, ex in enumerate(dataset.train)]
    assert [s for _, s in traces] == [S.mixed_trace(ex, i, plain)[1]
                                      for i, ex in enumerate(dataset.train)]
    careful = [(t, ex) for (t, s), ex in zip(traces, dataset.train) if not s]
    invented = 0
    for t, ex in careful:
        clean = S.reasoning_trace(ex.scene, ex.question)
        if t == clean:
            assert not S.hallucinated(t, ex.scene, ex.question.text)
            continue
        invented += 1
        assert S.hallucinated(t, ex.scene, ex.question.text)
        assert t.split(". ", 1)[1] == clean.split(". ", 1)[1]  # the count and the answer
        told = t.split("I see ", 1)[1].split(". ")[0]
        assert len(told.replace(" and ", ", ").split(", ")) == len(ex.scene.shapes) + 1, told
    assert abs(invented / len(careful) - 0.4) < 0.07, invented / len(careful)
    with pytest.raises(ValueError, match="TraceMix.embellish_rate must be in"):
        S.TraceMix(embellish_rate=-0.1)


def test_shortcut_guesses_wrong_with_an_answer_of_the_right_type():
    rng = np.random.default_rng(0)
    q = S.Question("count_kind", ("circles",), "How many circles are there?", "0", "number")
    assert {S.wrong_answer(q, rng) for _ in range(50)} == {"1", "2"}
    q = S.Question("kind_of_color", ("red",), "What shape is the red one?", "B", "choice")
    assert {S.wrong_answer(q, rng) for _ in range(50)} == {"A", "C"}
    q = S.Question("largest_color", (), "What color is the largest shape?", "red", "text")
    assert {S.wrong_answer(q, rng) for _ in range(50)} == {"green", "blue", "yellow"}
    assert not S.is_shortcut("<think>\nI see a guess.")
    with pytest.raises(ValueError, match="TraceMix.shortcut_rate must be in"):
        S.TraceMix(shortcut_rate=1.5)
