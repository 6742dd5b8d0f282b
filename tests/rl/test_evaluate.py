"""Held-out evaluation arithmetic: greedy metrics, sampled accuracy and pass@k, with the
rollout replaced by a table of known outcomes (the decoding itself is tested in
tests/generate and end to end in tests/demo)."""

import numpy as np
import pytest

from r1v2_jax.rl import evaluate as ev
from r1v2_jax.rl.rollout import Sample

# accuracy of each sample, per prompt (5 prompts, k = 3)
OUTCOMES = {0: [1, 0, 0], 1: [0, 0, 0], 2: [1, 1, 1], 3: [0, 0, 1], 4: [0, 0, 0]}


class FakeExample:
    def __init__(self, uid):
        self.uid = uid


def fake_rollout(calls):
    def rollout(config, params, examples, options, **kw):
        calls.append((len(examples), options.num_samples, options.temperature))
        return [[Sample(e, np.zeros(2 + g, np.int32), np.zeros(2 + g, np.float32), "r", False,
                        accuracy=float(OUTCOMES[e.uid][g]), format=1.0,
                        hallucinated=e.uid == 4)
                 for g in range(options.num_samples)] for e in examples]
    return rollout


@pytest.fixture
def calls(monkeypatch):
    seen = []
    monkeypatch.setattr(ev, "rollout", fake_rollout(seen))
    return seen


def run(fn, **kw):
    return fn(None, None, [FakeExample(i) for i in range(5)], tokenizer=None, prompt=None,
              max_new_tokens=4, score=None, **kw)


def test_sampled_accuracy_and_pass_at_k(calls):
    m = run(ev.evaluate_sampled, batch_size=6, num_samples=3, temperature=1.0)
    assert m["eval_sampled_accuracy"] == pytest.approx(5 / 15)
    assert m["eval_pass_at_k"] == pytest.approx(3 / 5)  # prompts 0, 2, 3
    assert m["eval_num_samples"] == 3
    # 6 // 3 = 2 prompts per call, the last call padded to the same shape
    assert calls == [(2, 3, 1.0)] * 3


def test_greedy_uses_the_first_sample_and_pads_the_last_batch(calls):
    m = run(ev.evaluate, batch_size=4)
    assert m["eval_accuracy"] == pytest.approx(2 / 5)  # prompts 0 and 2
    assert m["eval_hallucination_rate"] == pytest.approx(1 / 5)
    assert m["eval_response_len"] == 2.0
    assert calls == [(4, 1, 0.0), (4, 1, 0.0)]


def test_sampled_eval_rejects_greedy_settings(calls):
    with pytest.raises(ValueError, match="temperature > 0"):
        run(ev.evaluate_sampled, batch_size=4, num_samples=3, temperature=0.0)


class QA:
    def __init__(self, question, answer, answer_type="number"):
        self.question, self.answer, self.answer_type = question, answer, answer_type


def test_answer_prior_accuracy_by_hand():
    train = [QA("How many red?", "1"), QA("How many red?", "1"), QA("How many red?", "2"),
             QA("Which?", "B", "choice"), QA("Which?", "A", "choice"), QA("Which?", "A", "choice"),
             QA("How many blue?", "0")]
    heldout = [QA("How many red?", "1"),       # prior "1": right
               QA("How many red?", "2"),       # prior "1": wrong
               QA("Which?", " A ", "choice"),  # prior "A" (2 of 3): right, whitespace ignored
               QA("How many green?", "1"),     # unseen: commonest number "1": right
               QA("What colour?", "red", "text")]  # no answer of that type: wrong
    assert ev.answer_prior_accuracy(train, heldout) == {"eval_accuracy": pytest.approx(3 / 5)}


def test_answer_prior_ties_go_to_the_first_answer_seen():
    train = [QA("q", "3"), QA("q", "2"), QA("q", "2"), QA("q", "3")]
    assert ev.answer_prior_accuracy(train, [QA("q", "3")])["eval_accuracy"] == 1.0
    assert ev.answer_prior_accuracy(train, [QA("q", "2")])["eval_accuracy"] == 0.0
