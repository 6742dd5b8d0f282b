"""Packing samples into an update batch: every array checked against a hand-written layout.

Position t of completion_mask / old_logps scores target token t+1, so the completion's
first token (at index len(prompt)) is marked at t = len(prompt) - 1.  A mask shifted by one
still trains on-policy without a visible metric change, hence these exact layouts.
"""

import numpy as np
import pytest

from r1v2_jax.rl.batching import grpo_batch, pack_sequences
from r1v2_jax.rl.examples import PromptExample
from r1v2_jax.rl.rollout import Sample

PAD = 9


def test_pack_sequences_hand_layout():
    ids, attn, comp = pack_sequences([np.array([11, 12, 13]), np.array([21])],
                                     [np.array([31, 32]), np.array([41, 42, 43, 44])], 7, PAD)
    np.testing.assert_array_equal(ids, [[11, 12, 13, 31, 32, 9, 9],
                                        [21, 41, 42, 43, 44, 9, 9]])
    np.testing.assert_array_equal(attn, [[1, 1, 1, 1, 1, 0, 0],
                                         [1, 1, 1, 1, 1, 0, 0]])
    # targets (ids[1:]):               12  13  31  32  pad pad
    np.testing.assert_array_equal(comp, [[0, 0, 1, 1, 0, 0],
                                         [1, 1, 1, 1, 0, 0]])  # 41 42 43 44 pad pad
    assert comp.dtype == np.float32 and ids.dtype == np.int32


def test_pack_sequences_marks_exactly_the_completion_targets():
    rng = np.random.default_rng(0)
    prompts = [rng.integers(10, 99, n) for n in (1, 4, 6)]
    comps = [rng.integers(100, 199, n) for n in (5, 1, 3)]
    ids, _, comp = pack_sequences(prompts, comps, 10, PAD)
    for row, c in zip(range(3), comps):
        np.testing.assert_array_equal(ids[row, 1:][comp[row] == 1], c)
    ids, attn, _ = pack_sequences([np.arange(5)], [np.arange(3)], 8, PAD)  # exactly full
    assert attn.all() and (ids == [[0, 1, 2, 3, 4, 0, 1, 2]]).all()
    with pytest.raises(ValueError, match=r"^sequence of 9 tokens exceeds seq_len=8$"):
        pack_sequences([np.arange(5)], [np.arange(4)], 8, PAD)


def _sample(uid, prompt, completion, logps, adv, tiles):
    ex = PromptExample(uid, np.asarray(prompt, np.int32), tiles, "q", "a", "number")
    return Sample(ex, np.asarray(completion, np.int32), np.asarray(logps, np.float32), "r", False,
                  advantage=adv)


def test_grpo_batch_hand_layout():
    tile = lambda v: np.full((1, 4, 4, 3), v, np.float32)  # noqa: E731
    samples = [
        _sample(0, [11, 12], [31, 32, 33], [-0.1, -0.2, -0.3], 1.5, tile(1.0)),
        _sample(1, [21, 22, 23], [41], [-0.4], -0.5, np.zeros((0, 4, 4, 3), np.float32)),
        _sample(2, [51], [61, 62], [-0.6, -0.7], 0.25, np.concatenate([tile(2.0), tile(3.0)])),
        _sample(3, [71, 72, 73, 74], [81, 82], [-0.8, -0.9], -2.0, tile(4.0)),
    ]
    b = grpo_batch(samples, seq_len=7, micro=2, tiles_per_micro=3, pad_id=PAD,
                   image_shape=(4, 4, 3), is_weights=np.array([1.0, 0.5, 2.0, 0.25]))
    np.testing.assert_array_equal(b.input_ids, [[[11, 12, 31, 32, 33, 9, 9],
                                                 [21, 22, 23, 41, 9, 9, 9]],
                                                [[51, 61, 62, 9, 9, 9, 9],
                                                 [71, 72, 73, 74, 81, 82, 9]]])
    np.testing.assert_array_equal(b.attention_mask, [[[1, 1, 1, 1, 1, 0, 0],
                                                      [1, 1, 1, 1, 0, 0, 0]],
                                                     [[1, 1, 1, 0, 0, 0, 0],
                                                      [1, 1, 1, 1, 1, 1, 0]]])
    np.testing.assert_array_equal(b.completion_mask, [[[0, 1, 1, 1, 0, 0],
                                                       [0, 0, 1, 0, 0, 0]],
                                                      [[1, 1, 0, 0, 0, 0],
                                                       [0, 0, 0, 1, 1, 0]]])
    np.testing.assert_allclose(b.old_logps, [[[0, -0.1, -0.2, -0.3, 0, 0],
                                              [0, 0, -0.4, 0, 0, 0]],
                                             [[-0.6, -0.7, 0, 0, 0, 0],
                                              [0, 0, 0, -0.8, -0.9, 0]]], rtol=0, atol=1e-7)
    np.testing.assert_allclose(b.advantages, [[1.5, -0.5], [0.25, -2.0]])
    np.testing.assert_allclose(b.is_weights, [[1.0, 0.5], [2.0, 0.25]])
    # tiles: micro-batch 0 holds sample 0's one tile, micro-batch 1 samples 2 and 3's three
    assert b.pixel_values.shape == (2, 3, 4, 4, 3)
    np.testing.assert_array_equal(b.pixel_values[:, :, 0, 0, 0], [[1, 0, 0], [2, 3, 4]])


def test_grpo_batch_defaults_and_errors():
    samples = [_sample(i, [5, 6], [7], [-1.0], float(i), np.zeros((0, 4, 4, 3), np.float32))
               for i in range(4)]
    b = grpo_batch(samples, seq_len=4, micro=4, tiles_per_micro=0, pad_id=PAD,
                   image_shape=(4, 4, 3))
    assert b.pixel_values is None
    np.testing.assert_array_equal(b.is_weights, np.ones((1, 4)))
    # a micro-batch without any image: its tile slots stay zero
    b = grpo_batch(samples, seq_len=4, micro=2, tiles_per_micro=2, pad_id=PAD,
                   image_shape=(4, 4, 3))
    assert b.pixel_values.shape == (2, 2, 4, 4, 3) and not b.pixel_values.any()
    with pytest.raises(ValueError, match=r"^batch of 4 is not a multiple of micro_batch_size=3$"):
        grpo_batch(samples, seq_len=4, micro=3, tiles_per_micro=0, pad_id=PAD,
                   image_shape=(4, 4, 3))
    big = [_sample(0, [5], [7], [-1.0], 1.0, np.ones((3, 4, 4, 3), np.float32))]
    with pytest.raises(ValueError, match=r"^micro-batch 0 has 3 image tiles, more than "
                                         r"tiles_per_micro=2; raise it in the config$"):
        grpo_batch(big, seq_len=4, micro=1, tiles_per_micro=2, pad_id=PAD, image_shape=(4, 4, 3))


def test_grpo_batch_loss_mask_per_sample_and_per_token():
    samples = [_sample(i, [5, 6], [7, 8], [-1.0, -2.0], 1.0, np.zeros((0, 4, 4, 3), np.float32))
               for i in range(2)]
    kw = dict(seq_len=5, micro=2, tiles_per_micro=0, pad_id=PAD, image_shape=(4, 4, 3))
    full = [[0, 1, 1, 0], [0, 1, 1, 0]]  # targets 6 7 8 pad: the completion is 7 8
    np.testing.assert_array_equal(grpo_batch(samples, **kw).completion_mask[0], full)
    b = grpo_batch(samples, loss_mask=np.array([1, 0]), **kw)  # sample 1 leaves the loss
    np.testing.assert_array_equal(b.completion_mask[0], [[0, 1, 1, 0], [0, 0, 0, 0]])
    tokens = np.array([[1, 1, 0, 1], [1, 0, 1, 1]])  # token 8 of row 0, 7 of row 1 rejected
    b = grpo_batch(samples, loss_mask=tokens, **kw)
    np.testing.assert_array_equal(b.completion_mask[0], [[0, 1, 0, 0], [0, 0, 1, 0]])
    np.testing.assert_allclose(b.old_logps[0], [[0, -1, -2, 0], [0, -1, -2, 0]])
    with pytest.raises(ValueError) as err:
        grpo_batch(samples, loss_mask=np.ones((2, 3)), **kw)
    assert str(err.value) == "grpo_batch: loss_mask must have shape (2,) or (2, 4), got (2, 3)"
    with pytest.raises(ValueError, match=r"got \(3,\)$"):
        grpo_batch(samples, loss_mask=np.ones(3), **kw)
