"""The generation engine on a random tiny model: log-probs, shared prefill, padding,
stop tokens, buckets and recompilation."""

from __future__ import annotations

import numpy as np
import pytest

from r1v2_jax.generate import (Buckets, bucket_size, engine_stats, generate,
                               reset_engine_stats, sequence_logprobs)
from tests.generate.conftest import IMAGE_ID, pixels, random_prompts, repad

SAMPLING = dict(temperature=0.7, top_p=0.9, top_k=20)
# Most tests share one compiled program: 3 prompts (<= 16 tokens, one image tile),
# 2 samples each, <= 16 new tokens, stop id 5.
STD = dict(num_samples=2, eos_token_id=5, **SAMPLING)


def teacher_forced(config, params, ids, mask, pix, out, num_samples, temperature):
    """Scores prompt + generated tokens of every output row in one right-padded batch and
    returns (scored log-probs, generated log-probs) on the generated positions."""
    rows = out.tokens.shape[0]
    gen, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    seqs = [np.concatenate([ids[r // num_samples][mask[r // num_samples] == 1],
                            gen[r, :lengths[r]]]) for r in range(rows)]
    width = max(len(s) for s in seqs)
    full = np.zeros((rows, width), np.int64)
    attn, completion = np.zeros_like(full), np.zeros_like(full)
    for r, s in enumerate(seqs):
        full[r, :len(s)], attn[r, :len(s)] = s, 1
        completion[r, len(s) - lengths[r]:len(s)] = 1
    tiles = None
    if pix is not None:  # each prompt's tiles, repeated for its samples, in row order
        owners = [b for b in range(ids.shape[0]) if (ids[b] == IMAGE_ID).any()]
        tiles = np.concatenate([pix[owners.index(r // num_samples)][None] for r in range(rows)
                                if r // num_samples in owners])
    scored = np.asarray(sequence_logprobs(config, params, full, tiles, attn, completion,
                                          temperature=temperature))
    got = np.asarray(out.logprobs)
    pairs = [(scored[r][completion[r] == 1], got[r, :lengths[r]]) for r in range(rows)]
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def test_sampled_logprobs_equal_a_teacher_forced_forward(tiny):
    config, params = tiny
    ids, mask = random_prompts([9, 14, 6], seed=1, image_at={1})
    ids[2], mask[2] = np.roll(ids[2], -8), np.roll(mask[2], -8)  # one right-padded row
    pix = pixels(1)
    out = generate(config, params, ids, pix, attention_mask=mask, max_new_tokens=12, seed=3,
                   **STD)
    scored, got = teacher_forced(config, params, ids, mask, pix, out, 2, 0.7)
    assert np.abs(scored - got).max() <= 1e-4
    assert got.max() <= 0 and got.min() < -0.1  # real, non-degenerate probabilities
    assert np.asarray(out.logprobs).dtype == np.float32
    after = np.arange(12)[None, :] >= np.asarray(out.lengths)[:, None]
    assert (np.asarray(out.logprobs)[after] == 0).all()


def test_samples_share_one_prefill_and_equal_unshared_runs(tiny):
    config, params = tiny
    ids, mask = random_prompts([7, 12], seed=3, image_at={1})
    pix = pixels(1, seed=3)
    row_ids = np.arange(100, 106)
    reset_engine_stats()
    shared = generate(config, params, ids, pix, attention_mask=mask, max_new_tokens=10,
                      num_samples=3, eos_token_id=5, sample_ids=row_ids, **SAMPLING)
    stats = engine_stats()
    assert (stats.prefill_calls, stats.prefill_rows, stats.decode_rows) == (1, 2, 6)
    unshared = generate(config, params, np.repeat(ids, 3, 0), np.repeat(pix, 3, 0),
                        attention_mask=np.repeat(mask, 3, 0), max_new_tokens=10,
                        num_samples=1, eos_token_id=5, sample_ids=row_ids, **SAMPLING)
    assert engine_stats().prefill_rows == 2 + 6
    np.testing.assert_array_equal(np.asarray(shared.tokens), np.asarray(unshared.tokens))
    np.testing.assert_allclose(np.asarray(shared.logprobs), np.asarray(unshared.logprobs),
                               atol=1e-5)
    tokens = np.asarray(shared.tokens)  # the samples of one prompt are different draws
    assert len({tuple(t) for t in tokens[:3]}) >= 2 and len({tuple(t) for t in tokens[3:]}) >= 2


def test_left_and_right_padding_give_the_same_tokens(tiny):
    config, params = tiny
    # padding slots hold the image token id: they must be ignored, not filled with features
    left_ids, left_mask = random_prompts([4, 13, 9], seed=5, image_at={1}, filler=IMAGE_ID)
    right_ids, right_mask = repad(left_ids, left_mask, "right", filler=IMAGE_ID)
    pix = pixels(1, seed=5)
    left = generate(config, params, left_ids, pix, attention_mask=left_mask,
                    max_new_tokens=10, **STD)
    right = generate(config, params, right_ids, pix, attention_mask=right_mask,
                     max_new_tokens=10, **STD)
    np.testing.assert_array_equal(np.asarray(left.tokens), np.asarray(right.tokens))
    np.testing.assert_array_equal(np.asarray(left.logprobs), np.asarray(right.logprobs))


def test_a_rows_result_does_not_depend_on_its_batch(tiny):
    """Default ids: row b*G+g is sample g of prompt b with key (seed, id_b, g); the same
    prompt and id in another batch (other neighbours, position and padding) give the same
    samples. (Batch-size independence: the shared-prefill test.)"""
    config, params = tiny
    ids, mask = random_prompts([6, 13, 8], seed=4, image_at={1})
    pix = pixels(1, seed=4)
    batch = generate(config, params, ids, pix, attention_mask=mask, max_new_tokens=10,
                     sample_ids=[4, 7, 9], **STD)
    others, others_mask = random_prompts([12, 3], seed=40, width=13)
    moved = np.concatenate([others, ids[1:2, -13:]])
    moved_mask = np.concatenate([others_mask, np.ones((1, 13), np.int64)])
    elsewhere = generate(config, params, moved, pix, attention_mask=moved_mask,
                         max_new_tokens=10, sample_ids=[11, 12, 7], **STD)
    np.testing.assert_array_equal(np.asarray(elsewhere.tokens)[4:6],
                                  np.asarray(batch.tokens)[2:4])
    default = generate(config, params, ids, pix, attention_mask=mask, max_new_tokens=10, **STD)
    assert not np.array_equal(np.asarray(default.tokens), np.asarray(batch.tokens))


def test_stop_tokens_end_rows_and_pad_the_rest(tiny):
    config, params = tiny
    ids, mask = random_prompts([8, 5, 11], seed=6)
    free = np.asarray(generate(config, params, ids, attention_mask=mask, max_new_tokens=12,
                               eos_token_id=(), pad_token_id=0).tokens)
    stops = (int(free[0, 4]), int(free[1, 2]))
    out = generate(config, params, ids, attention_mask=mask, max_new_tokens=12,
                   eos_token_id=stops, pad_token_id=0)
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    for r in range(3):
        hits = np.flatnonzero(np.isin(free[r], stops))
        n = hits[0] + 1 if hits.size else 12
        assert lengths[r] == n and bool(out.truncated[r]) == (hits.size == 0)
        np.testing.assert_array_equal(tokens[r, :n], free[r, :n])
        assert (tokens[r, n:] == 0).all()
    assert lengths[0] <= 5 and lengths[1] <= 3
    # greedy log-probs are temperature-1 log-probs of the chosen tokens
    scored, got = teacher_forced(config, params, ids, mask, None, out, 1, 1.0)
    assert np.abs(scored - got).max() <= 1e-4


def test_no_recompilation_inside_a_bucket(tiny):
    """Prompt lengths, widths, max_new_tokens, temperature and seed vary inside one bucket:
    one program (compiled here unless an earlier test already did); a prompt of the next
    bucket compiles exactly one more."""
    config, params = tiny
    before = engine_stats()
    for lengths, new, width in (([3, 9, 1], 10, 20), ([16, 1, 5], 16, 16), ([12, 12, 2], 9, 30)):
        ids, mask = random_prompts(lengths, seed=sum(lengths), width=width)
        out = generate(config, params, ids, attention_mask=mask, max_new_tokens=new,
                       **{**STD, "temperature": 0.5 + new / 100}, seed=new)
        assert out.tokens.shape == (6, new)
    after = engine_stats()
    assert after.calls - before.calls == 3 and after.compilations - before.compilations <= 1
    ids, mask = random_prompts([17, 2, 4], seed=0)
    out = generate(config, params, ids, attention_mask=mask, max_new_tokens=10,
                   buckets=Buckets(prompt=(16, 24)), **STD)
    assert engine_stats().compilations == after.compilations + 1
    assert out.tokens.shape == (6, 10)


def test_bucket_sizes():
    assert [bucket_size(n, None, 16, "x") for n in (1, 16, 17, 100)] == [16, 16, 32, 128]
    assert bucket_size(5, (4, 8, 12), 1, "x") == 8
    with pytest.raises(ValueError, match="exceeds the largest bucket"):
        bucket_size(13, (4, 8, 12), 1, "x")
    with pytest.raises(ValueError, match="strictly increasing"):
        Buckets(prompt=(8, 4))


@pytest.mark.parametrize("bad, match", [
    (dict(sample_ids=[1, 2, 3]), "sample_ids must have"),
    (dict(eos_token_id=64), r"ids must be ints in \[0, 64\)"),
    (dict(eos_token_id=(), pad_token_id=None), "pad_token_id is required"),
    (dict(top_p=0.0), "0 < top_p <= 1"),
    (dict(attention_mask=np.array([[0, 0, 0], [1, 1, 1]])), r"prompt rows \[0\] have no"),
    (dict(max_new_tokens=5, buckets=Buckets(new_tokens=(4,))), "max_new_tokens = 5 exceeds"),
    (dict(buckets=Buckets(prompt=(2,))), "prompt length = 3 exceeds"),
])
def test_bad_arguments_are_rejected(tiny, bad, match):
    config, params = tiny
    kw = {**dict(max_new_tokens=4, eos_token_id=5, temperature=0.5), **bad}
    with pytest.raises(ValueError, match=match):
        generate(config, params, np.ones((2, 3), np.int64), **kw)


def test_image_placeholders_must_match_the_tiles(tiny):
    config, params = tiny
    ids, mask = random_prompts([8], image_at={0})
    with pytest.raises(ValueError, match="no pixel_values"):
        generate(config, params, ids, max_new_tokens=4, eos_token_id=5)
    with pytest.raises(ValueError, match="2 tiles need 8"):
        generate(config, params, ids, pixels(2), max_new_tokens=4, eos_token_id=5)
