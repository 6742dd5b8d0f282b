"""Per-step metrics to `metrics.jsonl` and TensorBoard event files (process 0 only).

The work folder may be local or a bucket (`gs://...`, through etils.epath as orbax uses):
object stores cannot append, so there the whole file is rewritten on each write (metrics
files are small: one short line per step).

Every line is strict JSON: a non-finite float (NaN, +-Infinity; a diverged loss) is written
as null, at any depth, so any JSON reader can load the file; TensorBoard gets finite
scalars only."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import jax
import numpy as np
from etils import epath


def to_python(value: Any) -> Any:
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        value = np.asarray(value)
        return value.item() if value.size == 1 else value.tolist()
    return value


def finite_or_none(value: Any) -> Any:
    """`value` with every non-finite float replaced by None (JSON null), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


class MetricsWriter:
    def __init__(self, workdir: str, *, tensorboard: bool = True, resume_step: int | None = None,
                 append: bool | None = None):
        """append: whether the store can append to a file (default: local paths only)."""
        self.enabled = jax.process_index() == 0
        self.path = epath.Path(workdir) / "metrics.jsonl"
        self._remote = ("://" in str(workdir)) if append is None else not append
        self._lines: list[str] = []  # the whole file, kept for object stores only
        self._tb = None
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            self._truncate_after(resume_step)
        elif self._remote and self.path.exists():
            self._lines = self.path.read_text().splitlines(keepends=True)
        if tensorboard:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(str(epath.Path(workdir) / "tensorboard"))

    def _truncate_after(self, step: int) -> None:
        """Drops lines written after the checkpoint we resume from, so the resumed run's
        metrics file equals an uninterrupted run's."""
        if not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines(keepends=True)
                if line.strip() and json.loads(line).get("step", 0) <= step]
        if self._remote:
            self._lines = keep
            self.path.write_text("".join(keep))
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(keep))
        os.replace(tmp, self.path)

    def write(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        record = {k: to_python(v) for k, v in record.items()}
        line = json.dumps(finite_or_none(record), sort_keys=True, allow_nan=False) + "\n"
        if self._remote:
            self._lines.append(line)
            self.path.write_text("".join(self._lines))
        else:
            with open(self.path, "a") as f:
                f.write(line)
        if self._tb is not None:
            step = int(record.get("step", 0))
            stage = record.get("stage", "train")
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step" \
                        and math.isfinite(v):
                    self._tb.add_scalar(f"{stage}/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    text = (epath.Path(workdir) / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]
