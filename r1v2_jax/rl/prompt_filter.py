"""Offline prompt-pool filter (R1V2 sec. 3.3.2: SSB applied to offline rollouts).

k rollouts per prompt with the starting policy; a prompt whose k rollouts are all correct
or all wrong would give every GRPO sample A = 0 (vanishing advantage), so it is dropped.
A rollout counts as correct when its value >= `correct_threshold` (bools and 0/1
accuracies work with the default 0.5).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class PromptFilterReport:
    total: int
    kept: int
    dropped_all_correct: int
    dropped_all_wrong: int

    def as_dict(self) -> dict[str, int]:
        return {"total": self.total, "kept": self.kept, "dropped_all_correct": self.dropped_all_correct,
                "dropped_all_wrong": self.dropped_all_wrong}


def filter_groups(
    outcomes: Sequence[Sequence[float | bool]], correct_threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray, PromptFilterReport]:
    """(keep mask [P], pass rate [P], report) from per-prompt groups of rollout outcomes.

    keep[p] = 0 < #correct(p) < k_p: the group is neither all-correct nor all-wrong.
    """
    keep, rates = [], []
    all_correct = all_wrong = 0
    for p, group in enumerate(outcomes):
        values = np.asarray(group, np.float64).reshape(-1)
        if values.size == 0 or not np.all(np.isfinite(values)):
            raise ValueError(f"filter_groups: prompt {p} has an empty or non-finite outcome group: {list(group)!r}")
        n_correct = int(np.sum(values >= correct_threshold))
        all_correct += n_correct == values.size
        all_wrong += n_correct == 0
        keep.append(0 < n_correct < values.size)
        rates.append(n_correct / values.size)
    report = PromptFilterReport(len(keep), int(sum(keep)), all_correct, all_wrong)
    return np.asarray(keep, bool), np.asarray(rates, np.float64), report


def filter_prompt_pool(
    prompts: Sequence[T],
    rollout_fn: Callable[[T, int], Sequence[float | bool]],
    k: int,
    *,
    correct_threshold: float = 0.5,
) -> tuple[list[T], list[float], PromptFilterReport]:
    """(kept prompts, their pass rates, report); rollout_fn(prompt, k) returns the
    correctness of k rollouts of `prompt` (bools or accuracy rewards)."""
    if k < 2:
        raise ValueError(f"filter_prompt_pool: k must be >= 2 (one rollout is always all-or-nothing), got {k}")
    outcomes = []
    for p, prompt in enumerate(prompts):
        group = list(rollout_fn(prompt, k))
        if len(group) != k:
            raise ValueError(f"filter_prompt_pool: rollout_fn returned {len(group)} outcomes for prompt {p}, want {k}")
        outcomes.append(group)
    keep, rates, report = filter_groups(outcomes, correct_threshold)
    kept = [prompt for prompt, m in zip(prompts, keep) if m]
    return kept, [float(r) for r, m in zip(rates, keep) if m], report


def read_jsonl(path: str) -> list[dict[str, Any]]:
    records = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: invalid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
    return records


def write_jsonl(path: str, records: Sequence[dict[str, Any]]) -> None:
    """Atomic: a temporary file in the same folder, renamed once complete."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=".jsonl")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def filter_prompt_pool_jsonl(
    in_path: str,
    out_path: str,
    rollout_fn: Callable[[dict[str, Any], int], Sequence[float | bool]],
    k: int,
    *,
    correct_threshold: float = 0.5,
    pass_rate_key: str | None = None,
) -> PromptFilterReport:
    """Filter a JSONL prompt pool into `out_path` (kept records unchanged, plus the group's
    pass rate under `pass_rate_key` when given)."""
    records = read_jsonl(in_path)
    kept, rates, report = filter_prompt_pool(records, rollout_fn, k, correct_threshold=correct_threshold)
    if pass_rate_key is not None:
        kept = [{**r, pass_rate_key: rate} for r, rate in zip(kept, rates)]
    write_jsonl(out_path, kept)
    return report
