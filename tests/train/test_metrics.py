"""metrics.jsonl: one sorted-key JSON line per record, arrays as Python values, lines past
the resumed step dropped, and the same file on stores that cannot append (buckets)."""

import builtins
import json

import jax.numpy as jnp
import numpy as np
import pytest

from r1v2_jax.train.metrics import MetricsWriter, read_metrics


def _write(workdir, steps, **kw):
    w = MetricsWriter(str(workdir), tensorboard=False, **kw)
    for s in steps:
        w.write({"step": s, "stage": "grpo", "loss": jnp.float32(s / 4), "v": np.arange(2)})
    w.close()


@pytest.fixture
def no_append(monkeypatch):
    real_open = builtins.open

    def guarded(file, mode="r", *args, **kwargs):
        if "a" in mode:
            raise AssertionError(f"appended to {file}")
        return real_open(file, mode, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", guarded)


def test_records_and_resume(tmp_path):
    _write(tmp_path, [1, 2, 3, 4])
    assert read_metrics(str(tmp_path))[1] == {"step": 2, "stage": "grpo", "loss": 0.5, "v": [0, 1]}
    _write(tmp_path, [3, 4, 5], resume_step=2)  # crashed after the step-2 checkpoint
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 2, 3, 4, 5]
    first = (tmp_path / "metrics.jsonl").read_text().splitlines()[0]
    assert first == json.dumps(json.loads(first), sort_keys=True)


def test_stores_without_append_give_the_same_file(tmp_path, no_append):
    bucket = tmp_path / "bucket"
    _write(bucket, [1, 2, 3, 4], append=False)
    _write(bucket, [3, 4, 5], resume_step=2, append=False)
    _write(bucket, [6], append=False)  # a new writer keeps the earlier lines
    steps = [r["step"] for r in read_metrics(str(bucket))]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_non_finite_values_are_written_as_null(tmp_path):
    w = MetricsWriter(str(tmp_path), tensorboard=False)
    w.write({"step": 1, "loss": jnp.float32(np.nan), "kl": float("inf"), "ok": 0.25,
             "v": np.array([1.5, -np.inf, np.nan]), "nested": {"a": [float("-inf"), 2]}})
    w.close()
    text = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text

    def strict(token):
        raise ValueError(f"non-standard JSON constant {token}")
    record = json.loads(text, parse_constant=strict)
    assert record == {"step": 1, "loss": None, "kl": None, "ok": 0.25, "v": [1.5, None, None],
                      "nested": {"a": [None, 2]}}
