"""Where a trainer's examples come from: an in-memory list or the streaming input pipeline.

Every trainer reads its training set through one small interface, so the demo (synthetic
examples made in memory) and `r1v2 train` (records streamed from JSONL / parquet / TFDS,
local or gs://) run the very same step code:

    feed.take(n)            -> the next n examples of the run's order (crossing epochs)
    feed.get_state()        -> JSON-able position, saved in the checkpoint's host state
    feed.set_state(state)   -> continue with exactly the examples a killed run would have seen
    feed.lookup(uid)        -> the example with that uid (SSB replay, MPO's saved pair pool)
    feed.first(n)           -> the first n examples in file order (the RM's calibration set)
    feed.metrics()          -> per-step metrics of the feed (records dropped at decode time)
    feed.limits             -> longest prompt / completion and most tiles of any example:
                               the static shapes of the jitted steps, known before step 1

Both feeds walk the same order: position k of the endless stream is example
`epoch_order(n, seed, k // n)[k % n]` of the n valid examples (`data.records`), so a
trainer streaming a file takes the very batches it would take from the file read whole.
`StreamFeed` holds only the pipeline's prefetch buffer and a small cache of looked-up
examples; a looked-up example that is not cached is read and decoded again from its row.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Protocol, Sequence

from r1v2_jax.data.records import DataState, next_batch


@dataclasses.dataclass(frozen=True)
class FeedLimits:
    prompt_tokens: int  # longest prompt (image tokens included)
    tiles: int  # most image tiles of one example
    completion_tokens: int = 0  # longest SFT completion / preference response (eos incl.)
    sequence_tokens: int = 0  # longest prompt + completion (the longer response) of one example

    def merge(self, other: "FeedLimits") -> "FeedLimits":
        """Limits that fit the examples of both (field by field, the larger)."""
        return FeedLimits(*(max(a, b) for a, b in zip(dataclasses.astuple(self),
                                                       dataclasses.astuple(other))))

    @classmethod
    def from_stats(cls, stats: dict) -> "FeedLimits":
        """From `data.pipeline.prevalidate(...).stats` (tokenizer given): known before any
        record is decoded."""
        return cls(max(stats["prompt_tokens"]), stats["max_tiles"],
                   stats["max_completion_tokens"], stats["max_sequence_tokens"])


class Feed(Protocol):
    limits: FeedLimits

    def __len__(self) -> int: ...
    def take(self, n: int) -> list: ...
    def get_state(self) -> dict: ...
    def set_state(self, state: dict) -> None: ...
    def lookup(self, uid: int) -> Any: ...
    def first(self, n: int) -> list: ...
    def metrics(self) -> dict[str, float]: ...


def _sizes(e) -> tuple[int, int, int]:
    """(prompt tokens, tiles, completion tokens) of a PromptExample, an SFTExample or a
    PreferencePair (its longer response)."""
    if hasattr(e, "chosen_ids"):
        return (len(e.example.prompt_ids), len(e.example.pixel_values),
                max(len(e.chosen_ids), len(e.rejected_ids)))
    return len(e.prompt_ids), len(e.pixel_values), len(getattr(e, "completion_ids", ()))


def limits_of(examples: Sequence) -> FeedLimits:
    """FeedLimits of in-memory examples."""
    sizes = [_sizes(e) for e in examples]
    if not sizes:
        raise ValueError("no examples to take shapes from")
    return FeedLimits(max(p for p, _, _ in sizes), max(t for _, t, _ in sizes),
                      max(c for _, _, c in sizes), max(p + c for p, _, c in sizes))


class ListFeed:
    """Examples held in memory (the demo, tests). State: `DataState` (epoch, index)."""

    def __init__(self, examples: Sequence, seed: int, *, uid: Callable[[Any], int] | None = None,
                 limits: FeedLimits | None = None):
        self.examples, self.seed = list(examples), int(seed)
        if not self.examples:
            raise ValueError("no examples to train on")
        self.state = DataState()
        self._uid = uid or (lambda e: e.uid)
        self._by_uid = None
        self.limits = limits or limits_of(self.examples)

    def __len__(self) -> int:
        return len(self.examples)

    def take(self, n: int) -> list:
        batch, self.state = next_batch(self.examples, n, self.state, self.seed)
        return batch

    def get_state(self) -> dict:
        return self.state.to_dict()

    def set_state(self, state: dict) -> None:
        self.state = DataState.from_dict(state)

    def lookup(self, uid: int):
        if self._by_uid is None:
            self._by_uid = {self._uid(e): e for e in self.examples}
        return self._by_uid[int(uid)]

    def first(self, n: int) -> list:
        return self.examples[:n]

    def metrics(self) -> dict[str, float]:
        return {}


class StreamFeed:
    """Examples streamed by a `data.pipeline.InputPipeline` (built with batch_size 1) and
    turned into the trainer's example type by `to_example(decoded)` (tiles normalised to
    float32 there, one step's batch at a time). `cache` examples stay for `lookup`."""

    def __init__(self, pipe, to_example: Callable[[Any], Any], limits: FeedLimits, *,
                 cache: int = 64):
        if pipe.config.batch_size != 1:
            raise ValueError(f"StreamFeed takes single records: the pipeline's batch_size is "
                             f"{pipe.config.batch_size}")
        self.pipe, self.to_example, self.limits = pipe, to_example, limits
        self._it = pipe.batches()
        self._cache: collections.OrderedDict[int, Any] = collections.OrderedDict()
        self._cache_size = int(cache)

    def __len__(self) -> int:
        return len(self.pipe.validated.indices)

    def _remember(self, uid: int, example) -> None:
        self._cache[uid] = example
        self._cache.move_to_end(uid)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def take(self, n: int) -> list:
        out = []
        for _ in range(n):
            (decoded,) = next(self._it)
            example = self.to_example(decoded)
            self._remember(decoded.uid, example)
            out.append(example)
        return out

    def get_state(self) -> dict:
        return self._it.get_state()

    def set_state(self, state: dict) -> None:
        self._it = self.pipe.batches(state)

    def lookup(self, uid: int):
        uid = int(uid)
        if uid not in self._cache:
            self._remember(uid, self.to_example(self.pipe.decode_uid(uid)))
        return self._cache[uid]

    def metrics(self) -> dict[str, float]:
        """data/decode_failures: records of this run (this process) whose images failed
        to decode after passing prevalidation (dropped and replaced by the next records;
        `pipe.decode_messages` names them). Counted since the process started."""
        return {"data/decode_failures": float(sum(self.pipe.decode_failures.values()))}

    def first(self, n: int) -> list:
        rows = self.pipe.validated.indices[:n]
        return [self.to_example(self.pipe.decode_uid(int(i) + self.pipe.config.uid_offset))
                for i in rows]


def as_feed(train, seed: int, **list_options) -> Feed:
    """A feed as is; a sequence of examples as a `ListFeed` in the run's seeded order."""
    if hasattr(train, "take") and hasattr(train, "limits"):
        return train
    return ListFeed(train, seed, **list_options)
