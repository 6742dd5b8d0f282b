"""Records on a gs:// bucket (served from memory) stream like local ones: JSONL with
relative image paths and parquet with image bytes."""

import numpy as np
from etils import epath

from pipeline_helpers import PROMPT, RULES, TOKENIZER, record_dicts, write_jsonl
from r1v2_jax.data.pipeline import InputPipeline, PipelineConfig, open_source
from r1v2_jax.data.pipeline.convert import ParquetWriter


def examples(path):
    pipe = InputPipeline(open_source(path), "prompt", RULES, TOKENIZER, PROMPT,
                         PipelineConfig(batch_size=7, seed=2, num_threads=2))
    return sorted(next(pipe.batches()), key=lambda e: e.uid)


def upload(local, remote):
    for f in local.rglob("*"):
        if f.is_file():
            dst = remote / f.relative_to(local).as_posix()
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(f.read_bytes())


def test_jsonl_and_parquet_on_a_bucket(gcs_in_memory, tmp_path):
    write_jsonl(tmp_path / "data" / "d.jsonl", record_dicts())
    w = ParquetWriter(str(tmp_path / "data" / "d.parquet"), "prompt", row_group_size=3)
    for r in record_dicts():
        w.add(r)
    w.close()
    upload(tmp_path / "data", epath.Path("gs://r1v2-bucket/data"))
    local = examples(str(tmp_path / "data" / "d.jsonl"))
    for remote in ("gs://r1v2-bucket/data/d.jsonl", "gs://r1v2-bucket/data/d.parquet"):
        got = examples(remote)
        assert [e.uid for e in got] == list(range(7))
        for a, b in zip(got, local):
            np.testing.assert_array_equal(a.tiles, b.tiles)
            np.testing.assert_array_equal(a.prompt_ids, b.prompt_ids)
            assert (a.answer, a.meta) == (b.answer, b.meta)
    assert got[0].source == "gs://r1v2-bucket/data/d.parquet:row 0"
