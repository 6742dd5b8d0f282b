"""Greedy generation equals transformers `generate(do_sample=False)` on a converted tiny
random InternVL model (left-padded batches of different lengths, with and without an image)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from r1v2_jax.convert import load_hf  # noqa: E402
from r1v2_jax.generate import generate  # noqa: E402
from tests.hf_fixtures import make_tiny_hf  # noqa: E402

EOS, PAD, NEW = 2, 0, 12


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder, model = make_tiny_hf(tmp_path_factory.mktemp("gen_hf"))
    config, params = load_hf(folder)
    return config, params, model


def left_padded(rows):
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), PAD, np.int64)
    mask = np.zeros_like(ids)
    for b, r in enumerate(rows):
        ids[b, width - len(r):], mask[b, width - len(r):] = r, 1
    return ids, mask


def hf_greedy(model, ids, mask, pixel_values=None):
    kw = {} if pixel_values is None else {"pixel_values": torch.tensor(pixel_values)}
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                             max_new_tokens=NEW, do_sample=False, eos_token_id=EOS,
                             pad_token_id=PAD, **kw).numpy()[:, ids.shape[1]:]
    # transformers stops once every row is done: pad to NEW like ours
    return np.pad(out, ((0, 0), (0, NEW - out.shape[1])), constant_values=PAD)


def ours(config, params, ids, mask, pixel_values=None):
    out = generate(config, params, ids, pixel_values, attention_mask=mask, max_new_tokens=NEW,
                   eos_token_id=EOS, pad_token_id=PAD, suppress_tokens=())
    return np.asarray(out.tokens)


def test_greedy_text_batch_matches_transformers(converted):
    config, params, model = converted
    rng = np.random.default_rng(0)
    rows = [rng.integers(3, 90, n) for n in (11, 4, 7)]
    ids, mask = left_padded(rows)
    expected = hf_greedy(model, ids, mask)
    np.testing.assert_array_equal(ours(config, params, ids, mask), expected)
    assert len({tuple(r) for r in expected}) == 3  # the rows really differ


def test_greedy_with_images_matches_transformers(converted):
    config, params, model = converted
    rng = np.random.default_rng(1)
    image = [config.image_token_id] * config.num_image_tokens
    rows = [list(rng.integers(3, 90, 3)) + image + list(rng.integers(3, 90, n))
            for n in (6, 2)]
    ids, mask = left_padded(rows)
    side = config.vision.image_size
    torch_pixels = rng.standard_normal((2, 3, side, side)).astype(np.float32)
    expected = hf_greedy(model, ids, mask, torch_pixels)
    got = ours(config, params, ids, mask, torch_pixels.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(got, expected)
    # the image matters: other pixels give other tokens
    other = ours(config, params, ids, mask, -torch_pixels.transpose(0, 2, 3, 1))
    assert not np.array_equal(other, expected)


def test_repetition_penalty_matches_transformers(converted):
    """Greedy with repetition_penalty equals transformers' RepetitionPenaltyLogitsProcessor
    (rows of one length: transformers would also penalise left padding)."""
    config, params, model = converted
    rng = np.random.default_rng(2)
    ids = rng.integers(3, 90, (3, 9))
    mask = np.ones_like(ids)
    with torch.no_grad():
        expected = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                  max_new_tokens=NEW, do_sample=False, eos_token_id=None,
                                  pad_token_id=PAD, repetition_penalty=1.8).numpy()[:, 9:]
    out = generate(config, params, ids, attention_mask=mask, max_new_tokens=NEW,
                   eos_token_id=(), pad_token_id=PAD, suppress_tokens=(),
                   repetition_penalty=1.8)
    np.testing.assert_array_equal(np.asarray(out.tokens), expected)
    # the penalty changes the result (so the test can fail), continuous batching agrees
    plain = generate(config, params, ids, attention_mask=mask, max_new_tokens=NEW,
                     eos_token_id=(), pad_token_id=PAD, suppress_tokens=())
    assert not np.array_equal(np.asarray(plain.tokens), expected)
    slots = generate(config, params, ids, attention_mask=mask, max_new_tokens=NEW,
                     eos_token_id=(), pad_token_id=PAD, suppress_tokens=(),
                     repetition_penalty=1.8, slots=2)
    np.testing.assert_array_equal(np.asarray(slots.tokens), expected)
