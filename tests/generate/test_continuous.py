"""Continuous batching (`generate(..., slots=k)`) against the static engine on the tiny
random model: same tokens, log-probs, lengths and stop reasons for the same seeds, whatever
the number of slots or the neighbours a sample decoded beside."""

from __future__ import annotations

import numpy as np
import pytest

from r1v2_jax.generate import engine_stats, generate, reset_engine_stats
from tests.generate.conftest import pixels, random_prompts

SAMPLING = dict(temperature=0.8, top_p=0.95, top_k=30)


def _np(out):
    return {k: np.asarray(getattr(out, k)) for k in ("tokens", "logprobs", "lengths", "truncated")}


def _same(a, b, atol=0.0):
    """Same tokens and stop reasons; log-probs equal (atol: a decode batch of another size
    may take another matmul kernel, ~1e-6 apart)."""
    for k in ("tokens", "lengths", "truncated"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    np.testing.assert_allclose(a["logprobs"], b["logprobs"], rtol=0, atol=atol)


@pytest.fixture(scope="module")
def work():
    """3 prompts (one with an image), 3 samples each, stop ids that end rows at varied
    lengths (some hit max_new_tokens)."""
    ids, mask = random_prompts([9, 14, 5], seed=11, image_at={1})
    return ids, mask, pixels(1, seed=11)


@pytest.mark.parametrize("sampling", [dict(temperature=0.0), SAMPLING], ids=["greedy", "sampled"])
def test_continuous_equals_static(tiny, work, sampling):
    config, params = tiny
    ids, mask, pix = work
    kw = dict(attention_mask=mask, max_new_tokens=14, num_samples=3, seed=7,
              sample_ids=[3, 8, 1], **sampling)
    free = np.asarray(generate(config, params, ids, pix, eos_token_id=(), pad_token_id=0,
                               **kw).tokens)
    kw["eos_token_id"] = (int(free[0, 2]), int(free[4, 6]))  # stops from the model's own run
    static = _np(generate(config, params, ids, pix, **kw))
    lengths = static["lengths"]
    # the work list really is ragged: early stops and rows run to the limit
    assert lengths.min() <= 3 and lengths.max() == 14 and static["truncated"].any()
    reset_engine_stats()
    cont = _np(generate(config, params, ids, pix, slots=4, **kw))
    stats = engine_stats()
    _same(cont, static, atol=1e-5)  # bitwise here; other decode batch sizes: ~1e-6
    # one prefill of the 3 prompts serves all 9 samples; slots stayed mostly busy
    assert (stats.prefill_calls, stats.prefill_rows, stats.decode_rows) == (1, 3, 9)
    assert stats.row_steps == 4 * stats.decode_steps
    assert stats.live_row_steps == int((lengths - 1).sum())  # first tokens come from prefill
    assert stats.live_row_steps / stats.row_steps > 0.6


def test_a_samples_tokens_do_not_depend_on_slot_or_neighbours(tiny, work):
    config, params = tiny
    ids, mask, pix = work
    kw = dict(max_new_tokens=14, eos_token_id=(5, 9, 17), seed=2, **SAMPLING)
    base = _np(generate(config, params, ids, pix, attention_mask=mask, num_samples=3,
                        sample_ids=[3, 8, 1], slots=4, **kw))
    # one slot (no neighbours at all) and more slots than samples
    for slots in (1, 11):
        _same(_np(generate(config, params, ids, pix, attention_mask=mask, num_samples=3,
                           sample_ids=[3, 8, 1], slots=slots, **kw)), base, atol=1e-5)
    # prompt 1 (the image one) alone among other prompts, in another order and slot count:
    # its samples are the same
    others, others_mask = random_prompts([13, 4], seed=99, width=14)
    moved = np.concatenate([others[:1], ids[1:2], others[1:]])
    moved_mask = np.concatenate([others_mask[:1], mask[1:2], others_mask[1:]])
    elsewhere = _np(generate(config, params, moved, pix, attention_mask=moved_mask,
                             num_samples=3, sample_ids=[40, 8, 41], slots=2, **kw))
    _same({k: v[3:6] for k, v in elsewhere.items()}, {k: v[3:6] for k, v in base.items()},
          atol=1e-5)
    assert not np.array_equal(elsewhere["tokens"][:3], base["tokens"][:3])


@pytest.mark.parametrize("new, eos", [(1, ()), (2, tuple(range(1, 40)))])
def test_rows_that_end_at_once(tiny, new, eos):
    """A sample that ends with its first token (max_new_tokens=1, or a stop id drawn from
    the prefill) frees its slot at once; results still equal the static engine's."""
    config, params = tiny
    ids, mask = random_prompts([5, 9], seed=3)
    kw = dict(attention_mask=mask, max_new_tokens=new, num_samples=3, eos_token_id=eos,
              pad_token_id=0, temperature=0.9, seed=1)
    static = _np(generate(config, params, ids, **kw))
    assert (static["lengths"] == 1).sum() >= 3
    _same(_np(generate(config, params, ids, slots=2, **kw)), static, atol=1e-5)


def test_slots_must_be_positive(tiny):
    config, params = tiny
    with pytest.raises(ValueError, match="slots must be None"):
        generate(config, params, np.ones((1, 3), np.int64), max_new_tokens=4, eos_token_id=5,
                 slots=0)
