"""Reward model: last-token value head, Bradley-Terry training that ranks held-out pairs of
a toy task, the hybrid reward's scorer interface, and value-head export / import."""

import dataclasses
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from r1v2_jax.convert import ConversionError, load_hf
from r1v2_jax.convert.value_head import (VALUE_HEAD_FILE, convert_reward_model_to_hf,
                                         load_reward_model, load_reward_model_hf,
                                         save_reward_model, save_reward_model_hf)
from r1v2_jax.data import synthetic
from r1v2_jax.data.prompts import PromptConfig, encode_prompt
from r1v2_jax.data.tokenizer import build_demo_tokenizer
from r1v2_jax.models import VLM, VLMConfig
from r1v2_jax.models.reward_model import (init_reward_model_params, last_token_index,
                                          reward_scores)
from r1v2_jax.rl.examples import PromptExample
from r1v2_jax.rl.pairs import PreferencePair
from r1v2_jax.rl.rewards import RewardModelScorer
from r1v2_jax.rl.rm_stage import RMTrainer
from r1v2_jax.rl.rm_trainer import JaxRewardModelScorer, ranking_accuracy
from r1v2_jax.train.metrics import read_metrics

sys.path.insert(0, "configs")
import tiny  # noqa: E402

TOK = build_demo_tokenizer(synthetic.vocabulary())


@pytest.fixture(scope="module")
def config():
    m = tiny.model().to_dict()
    m["image_token_id"] = TOK.img_context_id
    m["text"]["eos_token_id"] = TOK.eos_id
    return VLMConfig.from_dict(m)


@pytest.fixture(scope="module")
def rm_params(config):
    return jax.jit(init_reward_model_params, static_argnums=0)(config, jax.random.key(0))


def test_last_token_index():
    mask = jnp.asarray([[1, 1, 1, 0, 0], [0, 0, 1, 1, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    assert last_token_index(mask).tolist() == [2, 3, 4, 0]


def test_score_is_the_head_on_the_last_real_token(config, rm_params):
    n = config.num_image_tokens
    ids = jnp.asarray([[config.image_token_id] * n + [20, 21, 22, 23],
                       [config.image_token_id] * n + [30, 31, 0, 0]])
    mask = jnp.asarray([[1] * (n + 4), [1] * (n + 2) + [0, 0]])
    pixels = jax.random.normal(jax.random.key(1), (2, 28, 28, 3))
    score = jax.jit(reward_scores, static_argnums=0)
    scores = score(config, rm_params, ids, mask, pixels)
    backbone = {k: v for k, v in rm_params.items() if k != "value_head"}
    hidden = jax.jit(lambda p: VLM(config).apply({"params": p}, ids, pixels, attention_mask=mask,
                                                 return_logits=False).hidden)(backbone)
    head = rm_params["value_head"]
    want = jnp.stack([hidden[0, n + 3], hidden[1, n + 1]]) @ head["kernel"][:, 0] + head["bias"][0]
    assert scores.dtype == jnp.float32
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-6)
    # more right padding changes nothing
    padded = score(config, rm_params, jnp.pad(ids, ((0, 0), (0, 3))),
                   jnp.pad(mask, ((0, 0), (0, 3))), pixels)
    np.testing.assert_allclose(padded, scores, rtol=1e-5, atol=1e-6)
    assert set(rm_params) == {"vision", "adapter", "text", "value_head"}
    assert rm_params["value_head"]["kernel"].shape == (config.text.hidden_size, 1)


# ----------------------------------------------------------------------------- toy task
GOOD, BAD = "circle", "square"
FILLER = ["I", "see", "a", "and", "shapes", "is", "the", "largest", "plus"]


def _toy_pairs(config, n, seed):
    """Chosen mentions GOOD, rejected BAD, at a random place among random filler words."""
    rng = np.random.default_rng(seed)
    prompt = PromptConfig(num_image_token=config.num_image_tokens)
    prompt_ids = np.asarray(encode_prompt(TOK, "<image>\nWhich shape?", [1], prompt), np.int32)
    pairs = []
    for i in range(n):
        words = list(rng.choice(FILLER, size=6))
        at = int(rng.integers(0, 7))
        ids = [np.asarray(TOK.encode(" ".join(words[:at] + [key] + words[at:])) + [TOK.eos_id],
                          np.int32) for key in (GOOD, BAD)]
        tile = rng.normal(size=(1, 28, 28, 3)).astype(np.float32)
        example = PromptExample(i, prompt_ids, tile, "<image>\nWhich shape?", "", "")
        pairs.append(PreferencePair(example, ids[0], ids[1]))
    return pairs


def _optim(lr, steps):
    return ml_collections.ConfigDict(dict(lr=lr, warmup_steps=0, schedule="constant",
                                          total_steps=steps, final_lr_ratio=0.1, clip_norm=1.0,
                                          b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
                                          master_fp32=False))


def test_bradley_terry_ranks_heldout_pairs(config, rm_params, tmp_path):
    cfg = ml_collections.ConfigDict(dict(
        rm=dict(batch_size=16, micro_batch_size=8, center_rewards_coefficient=0.0),
        optim=_optim(3e-3, 40),
        train=dict(steps=40, seed=0, trainable="llm+adapter", checkpoint_every=20,
                   keep_checkpoints=1, async_checkpoint=False, eval_every=0,
                   eval_at_start=False)))
    train, heldout = _toy_pairs(config, 256, seed=0), _toy_pairs(config, 64, seed=1)
    trainer = RMTrainer(cfg, config, rm_params, train=train, heldout=[], pad_id=TOK.pad_id,
                        workdir=str(tmp_path), log=lambda m: None)
    last = trainer.run()
    logs = read_metrics(str(tmp_path))
    assert [r["step"] for r in logs] == list(range(1, 41)) and last["step"] == 40
    trained = trainer.params()
    # the vision tower was frozen ("llm+adapter"): bit-identical; the head trained
    jax.tree.map(np.testing.assert_array_equal, trained["vision"], rm_params["vision"])
    assert not np.allclose(trained["value_head"]["kernel"], rm_params["value_head"]["kernel"])
    scorer = JaxRewardModelScorer(config, trained, tokenizer=TOK,
                                  prompt=PromptConfig(num_image_token=config.num_image_tokens),
                                  batch_size=16, seq_len=48, max_tiles=1)
    before = ranking_accuracy(JaxRewardModelScorer(
        config, rm_params, tokenizer=TOK, prompt=PromptConfig(num_image_token=config.num_image_tokens),
        batch_size=16, seq_len=48, max_tiles=1), heldout)
    after = ranking_accuracy(scorer, heldout)
    print(before, after)
    assert after["pair_accuracy"] >= 0.9, (before, after, last)
    assert after["pair_margin"] > 0

    # the hybrid reward's text interface scores exactly what the token interface does
    assert isinstance(scorer, RewardModelScorer)
    p = heldout[:3]
    texts = ["<think>\n" + TOK.decode(q.chosen_ids[:-1]) for q in p]
    by_text = scorer.score([q.example.question for q in p], texts, [q.example.pixel_values for q in p])
    by_ids = scorer.score_pairs(p)[0]
    np.testing.assert_allclose(by_text, by_ids, rtol=1e-6)
    with pytest.raises(ValueError, match="rm.max_seq_len=48"):
        scorer.score_tokens([np.zeros(40, np.int32)], [np.zeros(10, np.int32)], [p[0].example.pixel_values])


# ----------------------------------------------------------------------------- export
def _assert_same(a, b):
    assert jax.tree.structure(jax.tree.map(np.asarray, a)) == jax.tree.structure(jax.tree.map(np.asarray, b))
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


@pytest.mark.parametrize("layout", ["hf", "original"])
def test_value_head_hf_round_trip(config, rm_params, tmp_path, layout):
    if layout == "original":  # the InternVL code normalises q/k with the ViT's own eps
        config = config.replace(vision=dataclasses.replace(
            config.vision, qk_norm_eps=config.vision.layer_norm_eps))
    params = jax.tree.map(np.asarray, rm_params)
    path = save_reward_model_hf(config, params, tmp_path / "rm", layout)
    from safetensors.numpy import load_file
    head = load_file(path / VALUE_HEAD_FILE)
    assert set(head) == {"value_head.weight", "value_head.bias"}
    assert head["value_head.weight"].shape == (1, config.text.hidden_size)
    np.testing.assert_array_equal(head["value_head.weight"][0], params["value_head"]["kernel"][:, 0])
    cfg2, loaded = load_reward_model_hf(path)
    _assert_same(loaded, params)
    # the folder is still a plain VLM checkpoint for LM loaders
    _, lm = load_hf(path)
    assert "value_head" not in lm
    (path / VALUE_HEAD_FILE).unlink()
    with pytest.raises(ConversionError, match="value_head.safetensors: not found"):
        load_reward_model_hf(path)


def test_value_head_orbax_round_trip_and_conversion(config, rm_params, tmp_path):
    params = jax.tree.map(np.asarray, rm_params)
    save_reward_model(config, params, tmp_path / "jax")
    _, loaded = load_reward_model(tmp_path / "jax")
    _assert_same(loaded, params)
    out = convert_reward_model_to_hf(tmp_path / "jax", tmp_path / "hf")
    _assert_same(load_reward_model_hf(out)[1], params)
    bad = {**params, "value_head": {"kernel": params["value_head"]["kernel"][:-1],
                                    "bias": params["value_head"]["bias"]}}
    with pytest.raises(ConversionError, match="value_head/kernel has shape"):
        save_reward_model_hf(config, bad, tmp_path / "bad")
