"""The GRPO rollout's health metrics and sampling options on the demo's tiny setup:
behaviour log-probs agree with a teacher-forced (trainer) scoring, the image-token check
is hard, stop strings cut responses, generation_config.json gives defaults."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from r1v2_jax.demo.pipeline import build_context
from r1v2_jax.generate import sequence_logprobs
from r1v2_jax.generate.gen_config import generation_defaults
from r1v2_jax.generate.stop_strings import stop_string_cut
from r1v2_jax.models import init_params
from r1v2_jax.rl.rollout import (SamplingOptions, check_image_tokens, logprob_mismatch,
                                 rollout)
from r1v2_jax.train.config_loader import apply_overrides, load_config_file

OVERRIDES = [
    "config.model.vision.image_size=28", "config.model.vision.hidden_size=32",
    "config.model.vision.intermediate_size=64", "config.model.text.hidden_size=32",
    "config.model.text.intermediate_size=64", "config.model.text.num_hidden_layers=2",
    "config.model.text.num_attention_heads=4", "config.model.text.head_dim=8",
    "config.demo.num_examples=20", "config.demo.num_heldout=4",
]


def _zero_score(examples, responses):
    n = len(responses)
    return {"reward": np.zeros(n), "accuracy": np.zeros(n), "format": np.zeros(n),
            "hallucinated": np.zeros(n, bool)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cfg = apply_overrides(load_config_file("configs/grpo_demo.py"), OVERRIDES)
    ctx = build_context(cfg, str(tmp_path_factory.mktemp("ctx")), log=lambda _: None)
    params = jax.jit(lambda r: init_params(ctx.model, r))(jax.random.key(1))
    return ctx, params


def _rollout(setup, options, slots=None):
    ctx, params = setup
    return rollout(ctx.model, params, ctx.train[:3], options, tokenizer=ctx.tokenizer,
                   prompt=ctx.prompt, seed=4, policy_version=0, score=_zero_score, slots=slots)


def test_behaviour_logprobs_match_the_trainer_and_metrics_are_reported(setup):
    ctx, params = setup
    options = SamplingOptions(num_samples=3, max_new_tokens=10, temperature=0.9)
    groups = _rollout(setup, options, slots=4)
    samples = [s for g in groups for s in g]
    m = groups.metrics
    assert m["rollout/image_tokens"] == sum(len(e.pixel_values) for e in ctx.train[:3]) \
        * ctx.model.num_image_tokens > 0
    assert 0 < m["rollout/slot_occupancy"] <= 1 and m["rollout/decode_tokens_per_s"] > 0
    # the trainer's view: teacher-forced log-probs of prompt + completion, one at a time
    trainer = []
    for s in samples:
        seq = np.concatenate([s.example.prompt_ids, s.completion_ids])[None]
        comp = np.zeros_like(seq)
        comp[0, len(s.example.prompt_ids):] = 1
        lp = sequence_logprobs(ctx.model, params, seq, s.example.pixel_values,
                               completion_mask=comp, temperature=0.9)
        trainer.append(np.asarray(lp)[0, len(s.example.prompt_ids):])
    health = logprob_mismatch([s.behaviour_logps for s in samples], trainer)
    assert health["rollout/logprob_delta_max"] < 1e-4
    assert 0 <= health["rollout/logprob_kl"] < 1e-8
    # a biased trainer shows up: mean |delta| = 0.1, KL = e^0.1 - 1.1
    shifted = logprob_mismatch([s.behaviour_logps for s in samples], [t + 0.1 for t in trainer])
    assert shifted["rollout/logprob_delta_mean"] == pytest.approx(0.1, abs=1e-6)
    assert shifted["rollout/logprob_kl"] == pytest.approx(np.exp(0.1) - 1.1, rel=1e-4)


def test_stop_strings_cut_responses(setup):
    ctx, _ = setup
    options = SamplingOptions(num_samples=2, max_new_tokens=10, temperature=0.9)
    plain = [s for g in _rollout(setup, options) for s in g]
    # a stop string taken from the middle of the first response
    text = ctx.tokenizer.decode(plain[0].completion_ids[:4].tolist(), skip_special_tokens=False)
    stop = text[-3:]
    cut = _rollout(setup, SamplingOptions(num_samples=2, max_new_tokens=10, temperature=0.9,
                                          stop_strings=(stop,)))
    first = cut[0][0]
    assert first.stop_reason == "stop_string" and len(first.completion_ids) <= 4
    np.testing.assert_array_equal(first.completion_ids,
                                  plain[0].completion_ids[:len(first.completion_ids)])
    assert not first.truncated and cut.metrics["rollout/stop_string_rate"] > 0


def test_stop_string_cut_is_the_shortest_prefix():
    pieces = ["ab", "c", "</", "ans", "wer>", "x"]
    decode = lambda toks: "".join(pieces[t] for t in toks)
    assert stop_string_cut(decode, list(range(6)), ["</answer>"]) == 5
    assert stop_string_cut(decode, list(range(6)), ["bc"]) == 2
    assert stop_string_cut(decode, list(range(6)), ["zz"]) is None
    assert stop_string_cut(decode, list(range(6)), []) is None


def test_image_token_check_is_hard(setup):
    ctx, _ = setup
    e = next(e for e in ctx.train if len(e.pixel_values))
    assert check_image_tokens(ctx.model, [e]) == len(e.pixel_values) * ctx.model.num_image_tokens
    missing = type(e)(**{**e.__dict__, "pixel_values": e.pixel_values[:0]})
    with pytest.raises(ValueError, match=f"prompt uid {e.uid}: .* image placeholder"):
        check_image_tokens(ctx.model, [e, missing])
    extra = type(e)(**{**e.__dict__, "prompt_ids": np.append(e.prompt_ids,
                                                             ctx.model.image_token_id)})
    with pytest.raises(ValueError, match=f"prompt uid {e.uid}: .* image placeholder"):
        check_image_tokens(ctx.model, [extra])


def test_generation_config_defaults(tmp_path):
    assert generation_defaults(tmp_path) == {}
    (tmp_path / "generation_config.json").write_text(json.dumps(dict(
        temperature=0.6, top_p=0.95, top_k=7, repetition_penalty=1.05, max_new_tokens=300,
        eos_token_id=[151645, 151643], do_sample=True, bos_token_id=1)))
    assert generation_defaults(tmp_path) == dict(
        temperature=0.6, top_p=0.95, top_k=7, repetition_penalty=1.05, max_new_tokens=300,
        eos_token_id=(151645, 151643))
    (tmp_path / "generation_config.json").write_text(json.dumps(dict(do_sample=False,
                                                                     temperature=0.6)))
    assert generation_defaults(tmp_path) == {"temperature": 0.0}
    (tmp_path / "generation_config.json").write_text(json.dumps(dict(top_p="high")))
    with pytest.raises(ValueError, match="generation_config.json: field 'top_p' must be"):
        generation_defaults(tmp_path)
