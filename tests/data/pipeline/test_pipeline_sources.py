"""Parquet (converted from a HF-style export), JSONL and TFDS sources of the same records
yield the same examples, and those equal the eager path's (records.py + image.py)."""

import numpy as np
import pytest

from pipeline_helpers import (PROMPT, RULES, TILING, TOKENIZER, record_dicts, write_hf_parquet,
                              write_jsonl, write_tfds)
from r1v2_jax.data import records as R
from r1v2_jax.data.image import preprocess_images
from r1v2_jax.data.pipeline import InputPipeline, PipelineConfig, normalize_tiles, open_source
from r1v2_jax.data.pipeline.convert import ColumnMap, convert
from r1v2_jax.data.prompts import encode_prompt

CONFIG = PipelineConfig(batch_size=3, seed=11, num_threads=2, prefetch_buffer_size=3)
CMAP = ColumnMap(columns={"question": "problem", "answer": "solution"}, images="image",
                 meta=("src",))


def take(path, n_batches, tfds_dir=None):
    pipe = InputPipeline(open_source(path, tfds_data_dir=tfds_dir), "prompt", RULES, TOKENIZER,
                         PROMPT, CONFIG)
    it = pipe.batches()
    return [e for _ in range(n_batches) for e in next(it)]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sources")
    hf = write_hf_parquet(tmp / "hf")
    assert convert(str(hf), str(tmp / "conv.parquet"), CMAP, row_group_size=3) == 7
    (tmp / "conv").mkdir()
    assert convert(str(hf), str(tmp / "conv" / "conv.jsonl"), CMAP) == 7
    jsonl = write_jsonl(tmp / "own" / "d.jsonl", record_dicts())
    tfds_name = write_tfds(tmp / "tfds", record_dicts())
    return {"parquet": (str(tmp / "conv.parquet"), None),
            "converted_jsonl": (str(tmp / "conv" / "conv.jsonl"), None),
            "jsonl": (str(jsonl), None), "tfds": (tfds_name, str(tmp / "tfds"))}


def test_every_source_yields_the_same_examples(sources):
    seen = {name: take(path, 5, d) for name, (path, d) in sources.items()}  # 15 > 7: 2 epochs
    ref = seen.pop("jsonl")
    assert [e.uid for e in ref[:7]] != list(range(7))  # shuffled ...
    assert sorted(e.uid for e in ref[:7]) == list(range(7))  # ... a permutation per epoch
    for name, examples in seen.items():
        assert len(examples) == len(ref) == 15, name
        for a, b in zip(examples, ref):
            assert (a.uid, a.question, a.answer, a.answer_type, a.meta) == \
                   (b.uid, b.question, b.answer, b.answer_type, b.meta), name
            np.testing.assert_array_equal(a.prompt_ids, b.prompt_ids)
            np.testing.assert_array_equal(a.tiles, b.tiles)
    assert {e.answer_type for e in ref} == {"number", "choice", "text", "math"}


def test_examples_equal_the_eager_path(sources):
    path = sources["jsonl"][0]
    eager = R.load_prompt_records(path, RULES, TOKENIZER).records
    for e in take(path, 3):
        r = eager[e.uid]
        images = preprocess_images(r.images, TILING)
        assert e.tiles.dtype == np.uint8 and e.tiles.shape[1:] == (28, 28, 3)
        # uint8 until normalised: bit-identical to the eager float32 tiles
        np.testing.assert_array_equal(normalize_tiles(e.tiles, TILING), images.pixel_values)
        np.testing.assert_array_equal(
            e.prompt_ids, encode_prompt(TOKENIZER, r.question, images.num_tiles, PROMPT))
        assert (e.question, e.answer, e.answer_type, e.source) == \
               (r.question, r.answer, r.answer_type, r.source)


def test_order_is_the_eager_order(sources):
    path = sources["jsonl"][0]
    order = R.epoch_order(7, CONFIG.seed, 0) + R.epoch_order(7, CONFIG.seed, 1)
    assert [e.uid for e in take(path, 4)] == list(order[:12])
