"""The grain pipeline: global order -> this host's share -> read + check + decode in
worker threads -> batches, with a JSON-able resumable state.

    pipe = InputPipeline(open_source(path), "prompt", rules, tokenizer, prompt_config,
                         PipelineConfig(batch_size=8, seed=0), process_index=jax.process_index(),
                         process_count=jax.process_count())
    it = pipe.batches()                   # endless iterator of lists of Decoded*
    state = it.get_state()                # dict of ints: store with the checkpoint
    it = pipe.batches(state)              # continues with the very same next records

The constructor runs `prevalidate` (cheap checks, before training). A record that fails
only when decoded (a corrupt image body, tiles disagreeing with the header) is dropped
in the worker and counted in `decode_failures`, never raised mid-run; the batch is
filled with the next records, deterministically, so resume stays exact. Should every
valid record fail to decode, the worker raises instead of spinning forever.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from typing import Any

import grain

from r1v2_jax.data import records as rec
from r1v2_jax.data.image import ImageError
from r1v2_jax.data.pipeline.decode import decode
from r1v2_jax.data.pipeline.order import HostOrder
from r1v2_jax.data.pipeline.validate import check_row, prevalidate
from r1v2_jax.data.prompts import PromptConfig
from r1v2_jax.data.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    batch_size: int = 1  # records per batch on this host
    seed: int = 0  # the global order (same on every host)
    num_threads: int = 4  # grain worker threads reading + decoding records
    prefetch_buffer_size: int = 8  # decoded records buffered ahead (bounds host memory)
    num_epochs: int | None = None  # None: endless
    uid_offset: int = 0  # uid = row index + uid_offset

    def __post_init__(self):
        for name in ("batch_size", "num_threads", "prefetch_buffer_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"PipelineConfig.{name} must be >= 1, got "
                                 f"{getattr(self, name)}")


class InputPipeline:
    def __init__(self, source, kind: str, rules: rec.RecordRules, tokenizer: Tokenizer,
                 prompt: PromptConfig, config: PipelineConfig = PipelineConfig(), *,
                 process_index: int = 0, process_count: int = 1, validated=None):
        self.source, self.kind, self.rules, self.tokenizer = source, kind, rules, tokenizer
        self.prompt, self.config = prompt, config
        self.validated = validated or prevalidate(source, kind, rules, tokenizer)
        self.order = HostOrder(self.validated.indices, config.seed, process_index,
                               process_count, config.num_epochs)
        self._lock = threading.Lock()
        self.decode_failures: Counter = Counter()  # reason -> count (this process)
        self.decode_messages: list[str] = []
        self._failed_rows: set[int] = set()

    def fingerprint(self) -> dict[str, Any]:
        """What a saved state is only valid for."""
        return {"source": str(self.source.path), "kind": self.kind,
                "num_rows": self.validated.num_rows,
                "num_valid": int(len(self.validated.indices)), "seed": self.config.seed,
                "process_index": self.order.h, "process_count": self.order.hosts,
                "batch_size": self.config.batch_size}

    def _decode(self, i: int):
        try:
            r = check_row(self.source, i, self.kind, self.rules, self.tokenizer, gold=False)
            return decode(self.kind, i + self.config.uid_offset, r, self.tokenizer,
                          self.rules.tiling, self.prompt)
        except (rec.RecordError, ImageError) as err:
            reason = getattr(err, "reason", "image_corrupt")
            with self._lock:
                if i not in self._failed_rows:
                    self.decode_failures[reason] += 1
                    self.decode_messages.append(str(err))
                    self._failed_rows.add(i)
                if len(self._failed_rows) == len(self.validated.indices):
                    raise RuntimeError(f"{self.source.path}: every record failed to decode: "
                                       f"{dict(self.decode_failures)}") from err
            return None  # dropped by grain

    def decode_uid(self, uid: int):
        """The record with that uid, read and decoded now in the calling thread (a replayed
        sample's prompt); a record that no longer decodes raises."""
        i = int(uid) - self.config.uid_offset
        if not 0 <= i < self.validated.num_rows:
            raise KeyError(f"{self.source.path}: no record with uid {uid}")
        r = check_row(self.source, i, self.kind, self.rules, self.tokenizer, gold=False)
        return decode(self.kind, int(uid), r, self.tokenizer, self.rules.tiling, self.prompt)

    def dataset(self) -> grain.IterDataset:
        c = self.config
        return (grain.MapDataset.source(self.order)
                .map(self._decode)
                .to_iter_dataset(grain.ReadOptions(num_threads=c.num_threads,
                                                   prefetch_buffer_size=c.prefetch_buffer_size))
                .batch(c.batch_size, drop_remainder=c.num_epochs is not None, batch_fn=list))

    def batches(self, state: dict | None = None) -> "PipelineIterator":
        return PipelineIterator(self, state)


class PipelineIterator:
    def __init__(self, pipe: InputPipeline, state: dict | None):
        self.pipe = pipe
        self._it = iter(pipe.dataset())
        if state is not None:
            self.set_state(state)

    def __iter__(self):
        return self

    def __next__(self) -> list:
        return next(self._it)

    def get_state(self) -> dict:
        """JSON-able: the position after the last batch returned, and what it applies to."""
        return {"grain": self._it.get_state(), "fingerprint": self.pipe.fingerprint()}

    def set_state(self, state: dict) -> None:
        mine = self.pipe.fingerprint()
        if state.get("fingerprint") != mine:
            diff = {k: (state.get("fingerprint", {}).get(k), v) for k, v in mine.items()
                    if state.get("fingerprint", {}).get(k) != v}
            raise ValueError(f"data state does not fit this pipeline (saved, now): {diff}")
        self._it.set_state(state["grain"])
