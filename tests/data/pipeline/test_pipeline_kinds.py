"""Preference and SFT records through the pipeline equal what the eager path builds
(rl.pairs.pairs_from_records, train.sft.SFTExample.from_record)."""

import numpy as np

from pipeline_helpers import PROMPT, RULES, TILING, TOKENIZER, png, write_jsonl
from r1v2_jax.data import records as R
from r1v2_jax.data.pipeline import InputPipeline, PipelineConfig, normalize_tiles, open_source
from r1v2_jax.data.sft_records import load_sft_records
from r1v2_jax.rl.pairs import pairs_from_records
from r1v2_jax.train.sft import SFTExample


def batches(path, kind, n=1, uid_offset=0):
    pipe = InputPipeline(open_source(str(path)), kind, RULES, TOKENIZER, PROMPT,
                         PipelineConfig(batch_size=3, seed=4, uid_offset=uid_offset))
    it = pipe.batches()
    return [e for _ in range(n) for e in next(it)]


def test_preference_records(tmp_path):
    rows = [{"images": [png(i, (56, 28 * (i + 1)))], "prompt": f"Which is red? {i}",
             "chosen": "<think>\nred circle\n</think>\n\\boxed{A}",
             "rejected": "<think>\nblue\n</think>\n\\boxed{B}" + " square" * i,
             **({"chosen_score": 0.75, "rejected_score": -1} if i != 1 else {})}
            for i in range(3)]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    eager = pairs_from_records(R.load_preference_records(path, RULES, TOKENIZER).records,
                               TOKENIZER, TILING, PROMPT, uid_offset=100)
    got = batches(path, "preference", uid_offset=100)
    assert sorted(e.uid for e in got) == [100, 101, 102]
    for e in got:
        p = eager[e.uid - 100]
        np.testing.assert_array_equal(e.prompt_ids, p.example.prompt_ids)
        np.testing.assert_array_equal(e.chosen_ids, p.chosen_ids)
        np.testing.assert_array_equal(e.rejected_ids, p.rejected_ids)
        np.testing.assert_array_equal(normalize_tiles(e.tiles, TILING), p.example.pixel_values)
        assert e.prompt == p.example.question
        np.testing.assert_equal((e.chosen_score, e.rejected_score),
                                (p.chosen_score, p.rejected_score))
    assert np.isnan(next(e for e in got if e.uid == 101).chosen_score)


def test_sft_records(tmp_path):
    rows = [{"images": [png(i, (28 * (i + 1), 56))], "question": f"How many? {i}",
             "response": f"<think>\ncount {i}\n</think>\n\\boxed{{{i}}}", "answer": str(i),
             "answer_type": "number"} for i in range(3)]
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    eager = [SFTExample.from_record(r, TOKENIZER, TILING, PROMPT)
             for r in load_sft_records(path, RULES, TOKENIZER).records]
    got = batches(path, "sft", n=2)
    assert sorted(e.uid for e in got) == [0, 0, 1, 1, 2, 2]
    for e in got:
        s = eager[e.uid]
        np.testing.assert_array_equal(e.prompt_ids, s.prompt_ids)
        np.testing.assert_array_equal(e.completion_ids, s.completion_ids)
        np.testing.assert_array_equal(normalize_tiles(e.tiles, TILING), s.pixel_values)
        assert e.completion_ids[-1] == TOKENIZER.eos_id
