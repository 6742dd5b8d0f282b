"""Pair builder: score scaling, threshold filtering, ties / all-equal groups, the threshold
report, round statistics, and JSONL preference records -> token pairs."""

import json

import ml_collections
import numpy as np
import pytest
from PIL import Image

from r1v2_jax.data import synthetic
from r1v2_jax.data.image import TilingConfig
from r1v2_jax.data.prompts import PromptConfig
from r1v2_jax.data.tokenizer import build_demo_tokenizer
from r1v2_jax.rl.examples import PromptExample
from r1v2_jax.rl.pairs import (best_vs_worst, hybrid_reward_range, load_preference_pairs,
                               pairs_from_groups, scale_scores, threshold_report)
from r1v2_jax.rl.rollout import Sample


def _reward_cfg(**kw):
    base = dict(w_acc=1.0, w_fmt=0.5, w_rm=0.0, rm_clip_tau=1.0)
    base.update(kw)
    return ml_collections.ConfigDict(base)


def test_hybrid_range_and_scaling():
    assert hybrid_reward_range(_reward_cfg()) == (0.0, 1.5)
    assert hybrid_reward_range(_reward_cfg(w_rm=0.5)) == (-0.5, 2.0)
    with pytest.raises(ValueError, match="rm_clip_tau is None.*score_range"):
        hybrid_reward_range(_reward_cfg(w_rm=1.0, rm_clip_tau=None))
    # demo weights: correct + formatted = 100, formatted but wrong = 33.3, nothing = 0
    np.testing.assert_allclose(scale_scores([1.5, 0.5, 0.0], (0.0, 1.5)), [100.0, 100 / 3, 0.0])
    np.testing.assert_allclose(scale_scores([2.0, -0.5, 0.75], (-0.5, 2.0)), [100.0, 0.0, 50.0])
    with pytest.raises(ValueError, match="max > min"):
        scale_scores([1.0], (1.0, 1.0))


def test_threshold_filters_at_the_margin():
    assert best_vs_worst([40.0, 55.0, 50.0], 15.0) == (1, 0)  # margin exactly 15: kept
    assert best_vs_worst([40.0, 54.9, 50.0], 15.0) is None  # 14.9 < 15
    assert best_vs_worst([40.0, 54.9, 50.0], 10.0) == (1, 0)
    assert best_vs_worst([0.0, 100.0], 100.0) == (1, 0)
    assert best_vs_worst([30.0], 0.0) is None  # a group of one cannot pair


def test_ties_and_all_equal_groups_give_no_pair():
    assert best_vs_worst([50.0, 50.0, 50.0, 50.0], 0.0) is None  # all equal, even at threshold 0
    assert best_vs_worst([7.0, 7.0], 0.0) is None
    # several samples share the best / worst score: the first of each is taken
    assert best_vs_worst([10.0, 90.0, 10.0, 90.0], 15.0) == (1, 0)
    # different scores but identical completions (e.g. a scorer with noise): no pair
    same = [np.asarray([4, 5, 1]), np.asarray([4, 5, 1])]
    assert best_vs_worst([20.0, 80.0], 15.0, same) is None
    assert best_vs_worst([20.0, 80.0], 15.0, [same[0], np.asarray([4, 1])]) == (1, 0)


def test_threshold_report_counts_by_hand():
    groups = [[0, 5], [10, 20], [0, 100, 50], [33, 33, 33], [60, 45]]  # margins 5, 10, 100, 0, 15
    assert threshold_report(groups, (0.0, 7.0, 10.0, 15.0, 16.0)) == {
        "pairs_at_0": 4, "pairs_at_7": 3, "pairs_at_10": 3, "pairs_at_15": 2, "pairs_at_16": 1}


def _example(uid, scene=None, question=""):
    return PromptExample(uid, np.arange(5, dtype=np.int32), np.zeros((1, 4, 4, 3), np.float32),
                         question, "1", "number", scene)


def _sample(example, reward, ids, hallucinated=False, accuracy=0.0):
    return Sample(example, np.asarray(ids, np.int32), np.zeros(len(ids), np.float32), "", False,
                  reward=reward, accuracy=accuracy, format=1.0, hallucinated=hallucinated)


def test_pairs_from_groups_and_round_statistics():
    scene = synthetic.make_example(0, 0).scene
    a, b, c = _example(0, scene), _example(1, scene), _example(2)  # c: content unknown
    groups = [
        [_sample(a, 1.5, [1, 2], accuracy=1.0), _sample(a, 0.5, [3], hallucinated=True),
         _sample(a, 1.5, [4])],  # margin 66.7: pair (0, 1)
        [_sample(b, 0.5, [5]), _sample(b, 0.5, [6])],  # all equal: no pair
        [_sample(c, 0.0, [7], hallucinated=True), _sample(c, 0.2, [8])],  # margin 13.3 < 15
    ]
    pairs, stats = pairs_from_groups(groups, (0.0, 1.5), threshold=15.0,
                                     report_thresholds=(10.0, 15.0))
    assert len(pairs) == 1 and stats.pairs == 1 and stats.groups == 3
    p = pairs[0]
    assert p.example.uid == 0 and p.chosen_ids.tolist() == [1, 2] and p.rejected_ids.tolist() == [3]
    np.testing.assert_allclose([p.chosen_score, p.rejected_score, p.margin], [100.0, 100 / 3, 200 / 3])
    assert (p.chosen_hallucinated, p.rejected_hallucinated) == (False, True)
    assert stats.all_equal_groups == 1
    assert stats.by_threshold == {"pairs_at_10": 2, "pairs_at_15": 1}
    # hallucination rate only over samples whose image content is known (groups a and b)
    assert stats.sampled_hallucination_rate == pytest.approx(1 / 5)
    assert stats.sampled_accuracy == pytest.approx(1 / 7)
    assert stats.rejected_hallucination_rate == 1.0 and stats.chosen_hallucination_rate == 0.0
    d = stats.as_dict()
    assert d["pairs_at_15"] == 1 and "by_threshold" not in d


def test_preference_records_to_token_pairs(tmp_path):
    Image.new("RGB", (28, 28), (200, 30, 30)).save(tmp_path / "a.png")
    record = {"images": ["a.png"], "prompt": "What color is the largest shape?",
              "chosen": "<think>\nI see red.\n</think>\n\\boxed{red}",
              "rejected": "<think>\nI see blue.\n</think>\n\\boxed{blue}", "chosen_score": 1.0}
    (tmp_path / "prefs.jsonl").write_text(json.dumps(record) + "\n")
    tok = build_demo_tokenizer(synthetic.vocabulary())
    prompt = PromptConfig(num_image_token=4)
    tiling = TilingConfig(image_size=28, min_num=1, max_num=1, use_thumbnail=False)
    (pair,) = load_preference_pairs(str(tmp_path / "prefs.jsonl"), tok, tiling, prompt)
    assert pair.example.pixel_values.shape == (1, 28, 28, 3)
    assert int(np.sum(pair.example.prompt_ids == tok.img_context_id)) == 4
    assert pair.chosen_ids[-1] == tok.eos_id and pair.rejected_ids[-1] == tok.eos_id
    assert tok.decode(pair.chosen_ids[:-1]) == "I see red.\n</think>\n\\boxed{red}"
    assert pair.chosen_score == 1.0 and np.isnan(pair.rejected_score)
    (tmp_path / "bad.jsonl").write_text(json.dumps({**record, "rejected": record["chosen"]}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: field 'rejected'"):
        load_preference_pairs(str(tmp_path / "bad.jsonl"), tok, tiling, prompt)


def test_require_correct_chosen_pairs_only_a_correct_answer_over_the_worst():
    a, b, c = _example(0), _example(1), _example(2)
    groups = [
        # two wrong answers, margin 66.7 from the format term alone: paired by score only
        [_sample(a, 0.5, [1]), _sample(a, 0.0, [2])],
        # a wrong answer outscores the correct one (RM term): chosen = the correct one
        [_sample(b, 1.2, [3]), _sample(b, 1.0, [4], accuracy=1.0), _sample(b, 0.0, [5])],
        # the only correct answer is within 15 points of the worst: no pair
        [_sample(c, 0.6, [6]), _sample(c, 0.2, [7], accuracy=1.0), _sample(c, 0.0, [8])],
    ]
    pairs, stats = pairs_from_groups(groups, (0.0, 1.5), threshold=15.0)
    assert [(p.example.uid, p.chosen_ids.tolist(), p.rejected_ids.tolist()) for p in pairs] == [
        (1, [4], [5])]
    np.testing.assert_allclose([pairs[0].chosen_score, pairs[0].rejected_score], [200 / 3, 0.0])
    assert stats.no_correct_chosen == 2 and stats.pairs == 1
    off, off_stats = pairs_from_groups(groups, (0.0, 1.5), threshold=15.0,
                                       require_correct_chosen=False)
    assert [(p.example.uid, p.chosen_ids.tolist()) for p in off] == [(0, [1]), (1, [3]), (2, [6])]
    assert off_stats.no_correct_chosen == 0
