"""The pipeline as a trainer's feed (train/feed.py): a streamed file gives the very batches
the file read whole gives, resumes exactly, re-reads replayed prompts by uid, and knows the
static shapes (longest prompt / completion, most tiles) before decoding anything."""

import dataclasses

import numpy as np
import pytest

from pipeline_helpers import PROMPT, RULES, TILING, TOKENIZER, png, record_dicts, write_jsonl
from r1v2_jax.data.pipeline import InputPipeline, PipelineConfig, open_source, prevalidate
from r1v2_jax.recipes.inputs import _TO_EXAMPLE
from r1v2_jax.train.feed import FeedLimits, ListFeed, StreamFeed, limits_of

SKIP = dataclasses.replace(RULES, on_invalid="skip")
SEED = 23


def _prompt_rows():
    rows = record_dicts()
    rows.insert(3, {"question": "How many?", "answer": "", "answer_type": "number"})  # invalid
    return rows


def _feeds(path, kind, rules=SKIP, cache=64):
    source = open_source(str(path))
    validated = prevalidate(source, kind, rules, TOKENIZER)
    pipe = InputPipeline(source, kind, rules, TOKENIZER, PROMPT,
                         PipelineConfig(batch_size=1, seed=SEED, num_threads=3,
                                        prefetch_buffer_size=2), validated=validated)
    to_example = lambda d: _TO_EXAMPLE[kind](d, TILING)
    stream = StreamFeed(pipe, to_example, FeedLimits.from_stats(validated.stats), cache=cache)
    whole = [to_example(pipe.decode_uid(int(i))) for i in validated.indices]
    return stream, whole, validated


def _uid(e):
    return e.example.uid if hasattr(e, "chosen_ids") else e.uid


def _same(a, b):
    for x, y in zip(dataclasses.astuple(a), dataclasses.astuple(b)):
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        elif not (isinstance(x, float) and np.isnan(x) and np.isnan(y)):
            assert x == y


def test_streamed_file_gives_the_in_memory_batches_and_resumes_exactly(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", _prompt_rows())
    stream, whole, validated = _feeds(path, "prompt")
    assert validated.skipped == {"empty_answer": 1} and len(stream) == len(whole) == 7
    assert [e.uid for e in whole] == [0, 1, 2, 4, 5, 6, 7]  # uid = row index
    listed = ListFeed(whole, SEED)
    for step in range(6):  # 18 examples: two epoch boundaries, mid-batch
        if step == 2:
            saved = stream.get_state()
            assert listed.get_state() == {"epoch": 0, "index": 6}
        got, want = stream.take(3), listed.take(3)
        assert [e.uid for e in got] == [e.uid for e in want], step
        for a, b in zip(got, want):
            _same(a, b)
    after = [e.uid for e in stream.take(3)]  # examples 19-21, as a resumed run sees them
    resumed, _, _ = _feeds(path, "prompt")
    resumed.set_state(saved)
    again = [e.uid for _ in range(4) for e in resumed.take(3)]
    replay = ListFeed(whole, SEED)
    replay.set_state({"epoch": 0, "index": 6})
    assert again[:12] == [e.uid for e in replay.take(12)]
    assert [e.uid for e in resumed.take(3)] == after


def test_lookup_decodes_an_evicted_example_again_and_first_is_file_order(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "d.jsonl", _prompt_rows())
    stream, whole, _ = _feeds(path, "prompt", cache=2)
    served = stream.take(5)
    decoded = []
    real = stream.pipe.decode_uid
    monkeypatch.setattr(stream.pipe, "decode_uid", lambda uid: decoded.append(uid) or real(uid))
    _same(stream.lookup(served[-1].uid), served[-1])  # cached: the last two served
    _same(stream.lookup(served[-2].uid), served[-2])
    assert decoded == []
    _same(stream.lookup(served[0].uid), served[0])  # evicted: read and decoded again
    assert decoded == [served[0].uid]
    with pytest.raises(KeyError, match="no record with uid 99"):
        stream.lookup(99)
    for a, b in zip(stream.first(4), whole[:4]):  # file order, whatever was served
        _same(a, b)
    assert [e.uid for e in stream.first(4)] == [0, 1, 2, 4]  # row 3 is invalid


@pytest.mark.parametrize("kind", ["prompt", "preference", "sft"])
def test_shapes_known_before_decoding_equal_the_decoded_examples(tmp_path, kind):
    if kind == "prompt":
        rows = record_dicts()
    else:  # different image sizes (tiles) and response lengths; the longest are apart
        rows = []
        for i in range(4):
            resp = "<think>\n" + "red " * (3 * i + 1) + "\n</think>\n\\boxed{A}"
            short = "<think>\nblue\n</think>\n\\boxed{B}"
            img = [png(i, [(28, 28), (84, 28), (56, 56), (28, 28)][i])]
            q = "How many red shapes are there?" + " red" * (5 * (i == 3))
            rows.append({"images": img, "prompt": q, "chosen": short, "rejected": resp}
                        if kind == "preference" else {"images": img, "question": q,
                                                      "response": resp})
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    stream, whole, _ = _feeds(path, kind)
    want = limits_of(whole)
    assert stream.limits == want
    if kind != "prompt":  # the longest sequence is not the longest prompt + longest completion
        assert want.sequence_tokens < want.prompt_tokens + want.completion_tokens
        assert want.completion_tokens > 0
    assert want.tiles > 1
