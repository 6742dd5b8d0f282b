"""Offline prompt-pool filter: keep prompts whose k rollouts are neither all right nor all wrong."""

import json

import numpy as np
import pytest

from r1v2_jax.rl.prompt_filter import (
    PromptFilterReport,
    filter_groups,
    filter_prompt_pool,
    filter_prompt_pool_jsonl,
    read_jsonl,
)


def test_filter_groups_counts():
    groups = [[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0], [True, True, False, True], [0.0, 1.0], [0.4, 0.2]]
    keep, rates, report = filter_groups(groups)
    assert keep.tolist() == [False, False, True, True, True, False]
    np.testing.assert_allclose(rates, [1.0, 0.0, 0.25, 0.75, 0.5, 0.0])
    assert report == PromptFilterReport(total=6, kept=3, dropped_all_correct=1, dropped_all_wrong=2)
    keep_strict, _, _ = filter_groups([[0.4, 0.2]], correct_threshold=0.3)  # threshold is a knob
    assert keep_strict.tolist() == [True]
    with pytest.raises(ValueError, match="prompt 1"):
        filter_groups([[1, 0], []])


def test_filter_prompt_pool_with_a_rollout_fn():
    pass_rate = {"easy": 1.0, "hard": 0.0, "mid": 0.5, "mostly": 0.75}
    calls = []

    def rollout_fn(prompt, k):  # deterministic stand-in for k sampled rollouts + checks
        calls.append((prompt, k))
        n = round(pass_rate[prompt] * k)
        return [True] * n + [False] * (k - n)

    kept, rates, report = filter_prompt_pool(["easy", "mid", "hard", "mostly"], rollout_fn, k=4)
    assert kept == ["mid", "mostly"] and rates == [0.5, 0.75]
    assert report.as_dict() == {"total": 4, "kept": 2, "dropped_all_correct": 1, "dropped_all_wrong": 1}
    assert calls == [("easy", 4), ("mid", 4), ("hard", 4), ("mostly", 4)]
    with pytest.raises(ValueError, match="returned 3 outcomes for prompt 0"):
        filter_prompt_pool(["mid"], lambda p, k: [True, False, True], k=4)
    with pytest.raises(ValueError, match="k must be >= 2"):
        filter_prompt_pool(["mid"], rollout_fn, k=1)


def test_jsonl_round_trip(tmp_path):
    src, dst = tmp_path / "pool.jsonl", tmp_path / "kept.jsonl"
    records = [{"id": i, "question": f"q{i}", "answer": str(i)} for i in range(5)]
    src.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    outcome = {0: [1, 1], 1: [0, 1], 2: [0, 0], 3: [1, 0], 4: [1, 1]}
    report = filter_prompt_pool_jsonl(str(src), str(dst), lambda r, k: outcome[r["id"]], k=2,
                                      pass_rate_key="pass_rate")
    assert report == PromptFilterReport(5, 2, 2, 1)
    assert read_jsonl(str(dst)) == [{**records[1], "pass_rate": 0.5}, {**records[3], "pass_rate": 0.5}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.jsonl", "pool.jsonl"]  # no temp file left

    def failing(record, k):
        raise RuntimeError("rollout crashed")

    with pytest.raises(RuntimeError):
        filter_prompt_pool_jsonl(str(src), str(tmp_path / "never.jsonl"), failing, k=2)
    assert not (tmp_path / "never.jsonl").exists()  # nothing written half-way


def test_read_jsonl_names_the_bad_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: invalid JSON"):
        read_jsonl(str(path))
    path.write_text('[1, 2]\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: expected a JSON object"):
        read_jsonl(str(path))
