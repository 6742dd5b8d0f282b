"""Bad rows: before training, the error records.py raises (same message, naming
source:row) or a counted skip; decode-time failures counted in the workers, never raised
mid-run."""

import dataclasses

import pytest

from pipeline_helpers import PROMPT, RULES, TOKENIZER, png, record_dicts, write_jsonl
from r1v2_jax.data import records as R
from r1v2_jax.data.pipeline import InputPipeline, PipelineConfig, open_source, prevalidate
from r1v2_jax.data.pipeline.convert import ParquetWriter

GOOD = {"images": ["img/0_0.png"], "question": "How many red shapes?", "answer": "2",
        "answer_type": "number"}
BAD_ROWS = [
    ('{"images": [', "bad_json"),
    ({**GOOD, "answer": "two"}, "bad_answer"),
    ({**GOOD, "answer_type": "integer"}, "bad_answer_type"),
    ({k: v for k, v in GOOD.items() if k != "question"}, "missing_field"),
    ({**GOOD, "images": ["img/none.png"]}, "image_missing"),
    ({**GOOD, "images": ["img/notpng.png"]}, "image_corrupt"),
    ({**GOOD, "question": "<image> and <image>?"}, "image_tags"),
    ({**GOOD, "question": "red " * 300}, "prompt_too_long"),
    ({**GOOD, "extra": 1}, "unknown_field"),
]


def folder_with(tmp_path, bad):
    path = write_jsonl(tmp_path / "d.jsonl", [record_dicts()[0], bad, record_dicts()[1]])
    (tmp_path / "img" / "notpng.png").write_bytes(b"not an image at all")
    return path


@pytest.mark.parametrize("bad,reason", BAD_ROWS)
def test_errors_are_records_py_errors(tmp_path, bad, reason):
    path = folder_with(tmp_path, bad)
    with pytest.raises(R.RecordError) as eager:
        R.load_prompt_records(path, RULES, TOKENIZER)
    with pytest.raises(R.RecordError) as streamed:
        prevalidate(open_source(str(path)), "prompt", RULES, TOKENIZER)
    assert streamed.value.reason == eager.value.reason == reason
    assert str(streamed.value) == str(eager.value)
    assert str(streamed.value).startswith(f"{path}:2: ")


def test_non_utf8_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [record_dicts()[0]])
    path.write_bytes(path.read_bytes() + b'{"question": "\xff"}\n')
    with pytest.raises(R.RecordError, match=r"d.jsonl:2: field '<line>': not UTF-8 \(byte 14"):
        prevalidate(open_source(str(path)), "prompt", RULES, TOKENIZER)


def test_skips_are_counted_and_never_served(tmp_path):
    rows = [record_dicts()[0], BAD_ROWS[1][0], BAD_ROWS[1][0], record_dicts()[1],
            BAD_ROWS[4][0]]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    rules = dataclasses.replace(RULES, on_invalid="skip")
    v = prevalidate(open_source(str(path)), "prompt", rules, TOKENIZER)
    assert v.indices.tolist() == [0, 3] and v.num_rows == 5
    assert v.skipped == {"bad_answer": 2, "image_missing": 1}
    assert v.skip_messages[2].startswith(f"{path}:5: field 'images[0]': image not found")
    pipe = InputPipeline(open_source(str(path)), "prompt", rules, TOKENIZER, PROMPT,
                         PipelineConfig(batch_size=4))
    assert {e.uid for e in next(pipe.batches())} == {0, 3}


def test_parquet_rows_are_named(tmp_path):
    w = ParquetWriter(str(tmp_path / "d.parquet"), "prompt", row_group_size=2)
    for r in record_dicts()[:3] + [{**record_dicts()[3], "answer": "x+"}]:
        w.add(r)
    w.close()
    with pytest.raises(R.RecordError, match=r"d.parquet:row 3: field 'answer': .*'math'"):
        prevalidate(open_source(str(tmp_path / "d.parquet")), "prompt", RULES, TOKENIZER)


def test_decode_failures_are_counted_not_raised(tmp_path):
    good = png(3, (56, 56))
    rows = record_dicts()[:4]
    rows[2] = {**rows[2], "images": [good[:len(good) // 2]]}  # header fine, body truncated
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    pipe = InputPipeline(open_source(str(path)), "prompt", RULES, TOKENIZER, PROMPT,
                         PipelineConfig(batch_size=3, num_threads=2))
    assert len(pipe.validated.indices) == 4  # header-only checks pass it
    it = pipe.batches()
    uids = [e.uid for _ in range(4) for e in next(it)]  # 12 = 4 epochs of the 3 good ones
    assert 2 not in uids and sorted(uids) == sorted([0, 1, 3] * 4)
    assert dict(pipe.decode_failures) == {"image_corrupt": 1}
    assert "img/2_0.png" in pipe.decode_messages[0]


def test_every_record_failing_to_decode_stops(tmp_path):
    good = png(3, (56, 56))
    path = write_jsonl(tmp_path / "d.jsonl", [{**r, "images": [good[:len(good) // 2]]}
                                               for r in record_dicts()[:2]])
    pipe = InputPipeline(open_source(str(path)), "prompt", RULES, TOKENIZER, PROMPT,
                         PipelineConfig(batch_size=1, num_threads=1))
    with pytest.raises(RuntimeError, match="every record failed to decode"):
        next(pipe.batches())


def test_non_utf8_bytes_in_a_parquet_text_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": q, "answer": b"2", "answer_type": b"number"}
            for q in (b"How many?", b"How \xff many?")]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    with pytest.raises(R.RecordError, match=r"d.parquet:row 1: field 'question': not UTF-8 "
                                            r"\(byte 4\)"):
        prevalidate(open_source(str(tmp_path / "d.parquet")), "prompt", RULES, TOKENIZER)
