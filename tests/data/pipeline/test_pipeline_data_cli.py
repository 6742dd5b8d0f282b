"""`r1v2 data convert` (HF-style export -> records, answer_type inferred) and
`r1v2 data stats`."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline_helpers import ANSWERS, png, write_hf_parquet
from r1v2_jax.cli import main
from r1v2_jax.data.pipeline.convert import infer_answer_type


@pytest.mark.parametrize("answer,kind", [
    ("12", "number"), ("-3.5", "number"), ("1,000", "number"), ("40%", "number"),
    ("$7$", "number"), ("B", "choice"), ("(C)", "choice"), ("D.", "choice"),
    ("\\frac{1}{2}", "math"), ("3/4", "math"), ("x^2+1", "math"), ("2\\sqrt{3}", "math"),
    ("y = 2x", "math"), ("30°", "math"), ("red", "text"), ("a", "text"), ("Z", "text"),
    ("the left one", "text")])
def test_infer_answer_type(answer, kind):
    assert infer_answer_type(answer, letters="ABCDEFGH") == kind


def stats(capsys, *args):
    assert main(["data", "stats", *args]) == 0
    out = capsys.readouterr().out
    return json.loads(out[:out.rindex("}") + 1]), out


def test_convert_then_stats(tmp_path, capsys):
    hf = write_hf_parquet(tmp_path / "hf")
    out = tmp_path / "train.parquet"
    assert main(["data", "convert", str(hf), str(out), "--question", "problem", "--answer",
                 "solution", "--images", "image", "--id", "src", "--meta", "kind",
                 "--row-group-size", "2"]) == 0
    assert f"wrote 7 prompt records to {out}" in capsys.readouterr().out
    table = pq.read_table(out)
    assert table.num_rows == 7 and pq.ParquetFile(out).metadata.num_row_groups == 4
    assert table.column("answer_type").to_pylist() == [t for _, t in ANSWERS]
    assert table.column("images").to_pylist()[1] == [png(1, (56, 28))]
    assert json.loads(table.column("meta").to_pylist()[3]) == {"kind": "math"}
    summary, _ = stats(capsys, str(out), "--image-size", "28", "--max-num", "4")
    assert summary == {"rows": 7, "valid": 7, "invalid": {},
                       "answer_types": {"number": 3, "choice": 2, "text": 1, "math": 1},
                       # 28x28 -> 1; 56x28, 40x90, 30x50 -> 2+1; 84x28 -> 3+1; 56x56, 70x70 -> 4+1
                       "tiles_per_image": {"1": 1, "3": 3, "4": 1, "5": 2}}


def test_stats_counts_invalid_rows(tmp_path, capsys):
    rows = [{"images": [png(0, (28, 28))], "question": "q", "answer": a, "answer_type": t}
            for a, t in [("2", "number"), ("two", "number"), ("B", "choice"), ("", "text")]]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    summary, out = stats(capsys, str(tmp_path / "d.parquet"), "--image-size", "28")
    assert (summary["rows"], summary["valid"]) == (4, 2)
    assert summary["invalid"] == {"bad_answer": 1, "empty_answer": 1}
    assert f"invalid: {tmp_path / 'd.parquet'}:row 3: field 'answer': empty" in out


def test_convert_names_a_missing_column(tmp_path, capsys):
    hf = write_hf_parquet(tmp_path / "hf")
    assert main(["data", "convert", str(hf), str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert "train-00000-of-00002.parquet:row 0: no column for 'question'" in err
    assert "--question COLUMN" in err and not (tmp_path / "o.parquet").exists()
