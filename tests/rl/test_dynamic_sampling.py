"""DAPO dynamic sampling (collect_groups), overlong shaping / truncated masking of samples,
and the per-token rollout-correction weights of an update batch."""

import numpy as np
import pytest

from r1v2_jax.rl.dynamic_sampling import collect_groups, has_variance
from r1v2_jax.rl.examples import PromptExample
from r1v2_jax.rl.off_policy import correction_weights
from r1v2_jax.rl.reward_shaping import apply_overlong, mask_truncated
from r1v2_jax.rl.rollout import Sample

G = 3


def example(uid, prompt_len=4):
    return PromptExample(uid=uid, prompt_ids=np.arange(prompt_len, dtype=np.int32),
                         pixel_values=np.zeros((0, 2, 2, 3), np.float32), question="q", answer="",
                         answer_type="number")


def group(uid, rewards, accuracy=None, length=3):
    acc = rewards if accuracy is None else accuracy
    return [Sample(example(uid), np.ones(length, np.int32), np.zeros(length, np.float32), "", False,
                   reward=float(r), accuracy=float(a)) for r, a in zip(rewards, acc)]


def scripted_draw(batches):
    calls = []

    def draw(round_):
        calls.append(round_)
        return batches[round_]
    return draw, calls


def test_keeps_varied_groups_until_the_batch_is_full():
    flat, varied = [0.5] * G, [0.0, 1.0, 0.5]
    batches = [[group(1, flat), group(2, varied), group(3, flat), group(4, flat)],
               [group(5, varied), group(6, flat), group(7, varied), group(8, varied)],
               [group(9, varied)] * 4]
    draw, calls = scripted_draw(batches)
    got, metrics = collect_groups(draw, 3, max_rounds=5)
    assert calls == [0, 1]  # stops once 3 varied groups are in
    assert [g[0].example.uid for g in got] == [2, 5, 7]  # draw order, surplus dropped
    assert metrics == {"ds_rounds": 2.0, "ds_generated_groups": 8.0, "ds_kept_groups": 3.0,
                       "ds_filled_flat_groups": 0.0, "ds_rollouts_per_kept_group": 8 * G / 3,
                       "ds_extra_rollouts": 4.0 * G}


def test_fills_with_latest_flat_groups_after_max_rounds():
    batches = [[group(1, [1, 1, 1]), group(2, [0, 1, 0])], [group(3, [0, 0, 0]), group(4, [2, 2, 2])]]
    draw, calls = scripted_draw(batches)
    got, metrics = collect_groups(draw, 2, max_rounds=2)
    assert calls == [0, 1]
    assert [g[0].example.uid for g in got] == [2, 4]
    assert metrics["ds_filled_flat_groups"] == 1.0 and metrics["ds_kept_groups"] == 1.0
    assert metrics["ds_rollouts_per_kept_group"] == 4 * G


def test_metric_accuracy_ignores_shaped_reward_variance():
    g = group(1, [0.9, 1.0, 0.8], accuracy=[1, 1, 1])  # rewards vary (e.g. length), accuracy not
    assert has_variance(g, "reward") and not has_variance(g, "accuracy")
    draw, _ = scripted_draw([[g, group(2, [0, 1, 1])]])
    got, _ = collect_groups(draw, 1, max_rounds=1, metric="accuracy")
    assert got[0][0].example.uid == 2
    with pytest.raises(ValueError, match="max_rounds"):
        collect_groups(draw, 1, max_rounds=0)


def test_overlong_shaping_and_truncated_masking():
    samples = group(1, [1.0, 1.0, 1.0, 1.0]) + []
    for s, n in zip(samples, (10, 13, 15, 16)):
        s.completion_ids = np.ones(n, np.int32)
    metrics = apply_overlong(samples, dict(enabled=True, buffer_len=4, penalty_factor=0.5), 16)
    # expected = 16 - 4 = 12: 10 -> 0, 13 -> -1/4, 15 -> -3/4, 16 -> -1; times 0.5
    np.testing.assert_allclose([s.reward for s in samples], [1.0, 0.875, 0.625, 0.5])
    assert metrics["overlong_penalty_mean"] == pytest.approx(-0.25)
    assert apply_overlong(samples, dict(enabled=False, buffer_len=4), 16) == {}
    samples[1].truncated, samples[1].advantage, samples[2].advantage = True, 0.7, -0.3
    mask_truncated(samples)
    assert [s.advantage for s in samples[1:3]] == [0.0, -0.3]


def test_correction_weights_align_with_the_packed_batch():
    samples = group(1, [0, 1], length=3)
    samples[0].behaviour_logps = np.log(np.array([0.5, 0.5, 0.5], np.float32))
    samples[1].behaviour_logps = np.log(np.array([0.5, 0.1, 0.5], np.float32))
    trainer = np.full((2, 9), -9.0, np.float32)  # garbage outside the completion
    trainer[:, 3:6] = np.log(0.5)  # completion targets start at column prompt_len - 1 = 3
    w, metrics = correction_weights(samples, trainer, dict(is_level="token", is_threshold=2.0,
                                                           rs_level="token", rs_threshold=4.0),
                                    seq_weights=np.array([1.0, 0.5], np.float32))
    expected = np.zeros((2, 9), np.float32)
    expected[0, 3:6] = 1.0
    expected[1, 3:6] = [0.5, 0.0, 0.5]  # ratio 5 rejected (> 4); SSB weight 0.5
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    assert metrics["rollout_rs_masked_fraction"] == pytest.approx(1 / 6)
    assert metrics["rollout_is_fraction_high"] == pytest.approx(1 / 6)
