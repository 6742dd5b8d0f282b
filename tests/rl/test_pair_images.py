"""Pair forwards (MPO log-probs, reward-model scores) give each side the images of its own
prompt, also when the micro-batch's tile array has padding slots (here prompts with 1, 3
and 0 tiles: 4 real tiles in 9 slots)."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1v2_jax.models import VLMConfig, init_params
from r1v2_jax.models.reward_model import init_reward_model_params, reward_scores
from r1v2_jax.rl.batching import pack_sequences, pack_tiles, to_micro
from r1v2_jax.rl.examples import PromptExample
from r1v2_jax.rl.mpo_step import MPOBatch, pair_token_logps
from r1v2_jax.rl.pair_forward import pair_pixels
from r1v2_jax.rl.pairs import PreferencePair
from r1v2_jax.rl.rm_trainer import pair_scores, rm_batch
from r1v2_jax.train.steps import sequence_token_logps

sys.path.insert(0, "configs")
import tiny  # noqa: E402

TILES = (1, 3, 0)
SLOTS = 3 * max(TILES)  # micro * max tiles, as the trainers size it
SEQ_LEN = 32
CHUNK = 7  # not a divisor of T - 1: the chunked log-prob path's remainder too


@pytest.fixture(scope="module")
def config():
    return VLMConfig.from_dict(tiny.model().to_dict())


@pytest.fixture(scope="module")
def pairs(config):
    rng = np.random.default_rng(3)
    n, size = config.num_image_tokens, config.vision.image_size
    out = []
    for i, tiles in enumerate(TILES):
        prompt = np.asarray([10 + i] + [config.image_token_id] * (n * tiles) + [20, 21 + i],
                            np.int32)
        pixels = rng.normal(size=(tiles, size, size, 3)).astype(np.float32)
        example = PromptExample(i, prompt, pixels, f"q{i}", "1", "number")
        chosen = rng.integers(30, 120, size=3 + i).astype(np.int32)
        rejected = rng.integers(30, 120, size=5 - i).astype(np.int32)
        out.append(PreferencePair(example, chosen, rejected, 1.0, 0.0, False, False))
    return out


def _pixels_or_none(tiles):
    return jnp.asarray(tiles) if len(tiles) else None


def test_pair_pixels_repeats_only_the_real_tiles(config):
    pv = jnp.arange(6, dtype=jnp.float32)[:, None, None, None] + 1  # 6 slots, values 1..6
    n = config.num_image_tokens
    ids = jnp.asarray([[config.image_token_id] * (2 * n) + [3], [config.image_token_id] * n + [4, 4]
                       + [0] * (n - 1)])  # 3 real tiles
    got = pair_pixels(config, pv, ids)[:, 0, 0, 0].tolist()
    assert got[:6] == [1, 2, 3, 1, 2, 3]  # the rest is filler no placeholder reads
    full = jnp.asarray([[config.image_token_id] * (6 * n)])
    assert pair_pixels(config, pv, full)[:, 0, 0, 0].tolist() == [1, 2, 3, 4, 5, 6] * 2


def test_mpo_pair_logps_equal_each_sides_own_forward(config, pairs):
    params = jax.jit(init_params, static_argnums=0)(config, jax.random.key(1))
    prompts = [p.example.prompt_ids for p in pairs]
    sides = {side: pack_sequences(prompts, [getattr(p, f"{side}_ids") for p in pairs], SEQ_LEN, 0)
             for side in ("chosen", "rejected")}
    size = config.vision.image_size
    pixels = pack_tiles([p.example.pixel_values for p in pairs], SLOTS, 3, (size, size, 3))
    assert pixels.shape[1] == SLOTS and sum(TILES) < SLOTS  # the case with padding slots
    mb = MPOBatch(*[jnp.asarray(to_micro(x, 3)[0]) for s in sides.values() for x in s],
                  pixel_values=jnp.asarray(pixels[0]))
    got = jax.jit(pair_token_logps, static_argnums=(0, 3))(config, params, mb, CHUNK)
    one = jax.jit(lambda i, m, px: sequence_token_logps(config, params, i, m, px,
                                                        chunk_size=CHUNK))
    for k, side in enumerate(("chosen", "rejected")):
        ids, mask, _ = sides[side]
        for i, p in enumerate(pairs):
            want = one(ids[i:i + 1], mask[i:i + 1], _pixels_or_none(p.example.pixel_values))[0]
            real = mask[i, 1:] > 0
            np.testing.assert_allclose(np.asarray(got[k][i])[real], np.asarray(want)[real],
                                       rtol=1e-5, atol=1e-5, err_msg=f"{side} row {i}")


def test_rm_pair_scores_equal_each_sides_own_forward(config, pairs):
    params = jax.jit(init_reward_model_params, static_argnums=0)(config, jax.random.key(2))
    size = config.vision.image_size
    batch = rm_batch(pairs, seq_len=SEQ_LEN, micro=3, tiles_per_micro=SLOTS, pad_id=0,
                     image_shape=(size, size, 3))
    mb = jax.tree.map(lambda x: jnp.asarray(x[0]), batch)
    chosen, rejected = jax.jit(pair_scores, static_argnums=0)(config, params, mb)
    score = jax.jit(reward_scores, static_argnums=0)
    for side, got in (("chosen", chosen), ("rejected", rejected)):
        ids, mask = getattr(mb, f"{side}_ids"), getattr(mb, f"{side}_mask")
        want = [float(score(config, params, ids[i:i + 1], mask[i:i + 1],
                            _pixels_or_none(p.example.pixel_values))[0])
                for i, p in enumerate(pairs)]
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6, err_msg=side)
