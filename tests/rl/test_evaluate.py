"""Held-out evaluation: greedy metrics, sampled accuracy and pass@k with the rollout
replaced by a table of known outcomes; `evaluate_report` on a tiny random model with a
fake scorer whose outcomes are known by hand (the decoding itself is tested in
tests/generate and end to end in tests/demo)."""

import json
from collections import Counter

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


# ----------------------------------------------------------------------------- report
def test_pass_at_k_unbiased_estimator_by_hand():
    assert ev.pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert ev.pass_at_k(5, 1, 1) == pytest.approx(1 / 5)
    assert ev.pass_at_k(6, 3, 2) == pytest.approx(1 - 3 / 15)
    assert ev.pass_at_k(3, 0, 3) == 0.0 and ev.pass_at_k(3, 1, 3) == 1.0  # n == k: any correct
    with pytest.raises(ValueError, match="pass@k"):
        ev.pass_at_k(3, 1, 4)


def test_extracted_answer_is_what_the_judge_compares():
    assert ev.extracted_answer("<think>\nso 3</think> It is \\boxed{3}.", "number") == "3"
    assert ev.extracted_answer("<think>\nhm</think>The answer is (C)", "choice") == "C"
    assert ev.extracted_answer("<think>\nhm</think>\nred\n", "text") == "red"
    assert ev.extracted_answer("no think close \\boxed{3}", "number") is None


REPORT_OUTCOMES = {0: [1, 0, 0], 1: [0, 0, 0], 2: [1, 1, 1], 3: [0, 0, 1], 4: [0, 1, 0]}
REPORT_TYPES = ["number", "number", "choice", "choice", "text"]


class CountingScorer:
    """Accuracy of the g-th response to prompt uid within one call: REPORT_OUTCOMES[uid][g]
    (0 past the table: the padding copies). Greedy gets g = 0. Remembers every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, examples, responses):
        seen = Counter()
        acc = []
        for e in examples:
            row = REPORT_OUTCOMES[e.uid]
            acc.append(row[seen[e.uid]] if seen[e.uid] < len(row) else 0.0)
            seen[e.uid] += 1
        self.calls.append(([e.uid for e in examples], list(responses)))
        acc = np.asarray(acc, np.float32)
        fmt = np.asarray([e.uid % 2 for e in examples], np.float32)
        return {"reward": acc + 0.5 * fmt, "accuracy": acc, "format": fmt,
                "rm": np.zeros(len(acc)), "hallucinated": np.zeros(len(acc), bool)}


@pytest.fixture(scope="module")
def tiny_policy():
    """Tiny random VLM + demo tokenizer; prompt 1 has an image tile."""
    import sys

    import jax

    from r1v2_jax.data import synthetic
    from r1v2_jax.data.prompts import PromptConfig, encode_prompt
    from r1v2_jax.data.tokenizer import build_demo_tokenizer
    from r1v2_jax.models import VLMConfig, init_params
    from r1v2_jax.rl.examples import PromptExample

    sys.path.insert(0, "configs")
    import tiny

    tok = build_demo_tokenizer(synthetic.vocabulary())
    m = tiny.model().to_dict()
    m["image_token_id"] = tok.img_context_id
    m["text"]["eos_token_id"] = tok.eos_id
    m["text"]["vocab_size"] = tok.vocab_size
    config = VLMConfig.from_dict(m)
    prompt = PromptConfig(num_image_token=config.num_image_tokens)
    size = config.vision.image_size
    pixels = np.random.default_rng(0).normal(size=(1, size, size, 3)).astype(np.float32)
    examples = []
    for uid, atype in enumerate(REPORT_TYPES):
        q = f"<image>\nHow many circles {uid}?" if uid == 1 else f"How many squares {uid}?"
        tiles = [1] if uid == 1 else []
        ids = np.asarray(encode_prompt(tok, q, tiles, prompt), np.int32)
        examples.append(PromptExample(uid, ids, pixels if uid == 1 else pixels[:0], q,
                                      str(uid), atype))
    params = jax.jit(init_params, static_argnums=0)(config, jax.random.key(0))
    return config, params, tok, prompt, examples


def test_report_by_hand_and_files(tiny_policy, tmp_path):
    config, params, tok, prompt, examples = tiny_policy
    scorer = CountingScorer()
    kw = dict(tokenizer=tok, prompt=prompt, score=scorer, max_new_tokens=5, batch_size=6)
    out = tmp_path / "eval"
    rep = ev.evaluate_report(config, params, examples, k=3, temperature=1.0, top_p=0.9, seed=7,
                             out_dir=str(out), **kw)
    # greedy = each prompt's first outcome: uids 0, 2 right; avg@3 = 6 / 15; pass@3: 0, 2, 3, 4
    assert rep["num_items"] == 5
    assert rep["eval_accuracy"] == pytest.approx(2 / 5)
    assert rep["eval_sampled_accuracy"] == pytest.approx(6 / 15)
    assert rep["eval_pass_at_k"] == pytest.approx(4 / 5)
    assert rep["eval_format_rate"] == pytest.approx(2 / 5)  # uids 1 and 3
    by = rep["by_answer_type"]
    assert by["number"] == pytest.approx({**by["number"], "num_items": 2, "eval_accuracy": 0.5,
                                          "eval_sampled_accuracy": 1 / 6, "eval_pass_at_k": 0.5})
    assert by["choice"] == pytest.approx({**by["choice"], "num_items": 2, "eval_accuracy": 0.5,
                                          "eval_sampled_accuracy": 4 / 6, "eval_pass_at_k": 1.0})
    assert by["text"] == pytest.approx({**by["text"], "num_items": 1, "eval_accuracy": 0.0,
                                        "eval_sampled_accuracy": 1 / 3, "eval_pass_at_k": 1.0})
    # calls: greedy 6 prompts (one padded); sampled 6 // 3 = 2 prompts per call
    assert [len(c[0]) for c in scorer.calls] == [6, 6, 6, 6]
    greedy_responses = scorer.calls[0][1]
    sampled_responses = {u: [] for u in range(5)}
    for uids, responses in scorer.calls[1:]:
        for u, r in zip(uids, responses):
            sampled_responses[u].append(r)

    assert json.loads((out / "summary.json").read_text()) == rep
    assert sorted(p.name for p in out.iterdir()) == ["items.jsonl", "summary.json"]  # no temp
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert [i["uid"] for i in items] == list(range(5))
    for item, e in zip(items, examples):
        assert (item["question"], item["answer"], item["answer_type"]) == (
            e.question, e.answer, e.answer_type)
        g = item["greedy"]
        assert g["response"] == greedy_responses[e.uid]
        assert g["accuracy"] == REPORT_OUTCOMES[e.uid][0] and g["format"] == e.uid % 2
        assert g["reward"] == pytest.approx(g["accuracy"] + 0.5 * g["format"])
        assert [s["response"] for s in item["samples"]] == sampled_responses[e.uid][:3]
        assert [s["accuracy"] for s in item["samples"]] == REPORT_OUTCOMES[e.uid]
        for r in [g] + item["samples"]:
            assert r["extracted"] == ev.extracted_answer(r["response"], e.answer_type)
            assert 1 <= r["num_tokens"] <= 5
        assert item["pass_at_k"] == float(any(REPORT_OUTCOMES[e.uid]))

    # the trainers' held-out evaluation is the same code: same samples, same numbers
    greedy = ev.evaluate(config, params, examples, **kw)
    assert greedy == {k: rep[k] for k in greedy}
    sampled = ev.evaluate_sampled(config, params, examples, num_samples=3, temperature=1.0,
                                  seed=7, **{**kw, "score": CountingScorer()})
    assert sampled["eval_sampled_accuracy"] == rep["eval_sampled_accuracy"]


def test_report_greedy_only_and_bad_settings(tiny_policy):
    config, params, tok, prompt, examples = tiny_policy
    kw = dict(tokenizer=tok, prompt=prompt, score=CountingScorer(), max_new_tokens=3,
              batch_size=4, temperature=1.0, top_p=1.0, seed=0)
    rep = ev.evaluate_report(config, params, examples[:2], k=0, **kw)
    assert rep["eval_accuracy"] == 0.5 and "eval_pass_at_k" not in rep
    with pytest.raises(ValueError, match="temperature > 0"):
        ev.evaluate_report(config, params, examples, k=2, **{**kw, "temperature": 0.0})
    with pytest.raises(ValueError, match="no examples"):
        ev.evaluate_report(config, params, [], k=2, **kw)
