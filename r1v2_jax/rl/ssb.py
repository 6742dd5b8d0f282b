"""Selective Sample Buffer (R1V2 sec. 3.3.2), host side; design in docs/rewards_and_ssb.md.

Each step, `assemble_batch(state, fresh, ...)` builds the update batch from the fresh
rollout (its size is kept):
  1. purge entries older than `max_staleness` policy versions;
  2. fresh effective samples (|A| > adv_tol) first, in rollout order;
  3. k = min(#zero-advantage fresh, floor(max_replay_ratio * B), #entries) slots are
     filled from the buffer, drawn without replacement with P ~ |A|^alpha + floor
     (successive sampling, numpy Generator.choice); the remaining zero-advantage fresh
     samples fill the rest;
  4. replayed entries count one reuse; at `max_reuse` they leave the buffer;
  5. fresh effective samples enter the buffer; over `capacity`, the lowest-priority
     (then oldest) or the oldest entries are evicted (`evict_by`).
Replayed samples keep their stored advantage; each one carries the off-policy handling
(`off_policy`: "recompute" logp_old under the current policy, or "truncated_is": keep the
behaviour log-probs, importance weight truncated at `is_cap`) for the trainer to apply.
The state (entries + RNG) is plain data: `SSBState.state_dict()` is JSON/msgpack-able.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import numpy as np

from r1v2_jax.train.host_state import ARRAY_KEY, decode_array, encode_array, is_encoded_array

OFF_POLICY_MODES = ("recompute", "truncated_is")
EVICT_MODES = ("priority", "oldest")
ON_POLICY = "on_policy"


@dataclass(frozen=True)
class SSBConfig:
    enabled: bool = True  # False: the batch is exactly the fresh samples, nothing stored
    alpha: float = 1.0
    floor: float = 1e-4
    max_replay_ratio: float = 0.5
    max_staleness: int = 4  # K: an entry of policy version v is usable while current - v <= K
    max_reuse: int = 4  # M: an entry is replayed at most M times
    capacity: int = 4096
    adv_tol: float = 1e-6
    off_policy: str = "recompute"
    is_cap: float = 2.0
    evict_by: str = "priority"

    def __post_init__(self):
        if self.off_policy not in OFF_POLICY_MODES:
            raise ValueError(f"SSBConfig.off_policy must be one of {OFF_POLICY_MODES}, got {self.off_policy!r}")
        if self.evict_by not in EVICT_MODES:
            raise ValueError(f"SSBConfig.evict_by must be one of {EVICT_MODES}, got {self.evict_by!r}")
        if not 0.0 <= self.max_replay_ratio <= 1.0:
            raise ValueError(f"SSBConfig.max_replay_ratio must be in [0, 1], got {self.max_replay_ratio}")
        for name in ("max_staleness", "max_reuse", "capacity"):
            if getattr(self, name) < (0 if name == "max_staleness" else 1):
                raise ValueError(f"SSBConfig.{name} is out of range: {getattr(self, name)}")
        if self.alpha < 0 or self.floor < 0 or self.adv_tol < 0 or self.is_cap <= 0:
            raise ValueError("SSBConfig: alpha, floor, adv_tol must be >= 0 and is_cap > 0")


@dataclass(frozen=True, eq=False)
class Payload:
    """A default payload: what the trainer needs to rebuild a sample.  SSB never looks
    inside a payload; any dataclass of arrays / scalars / str / nested dataclasses works."""

    prompt_ref: str | int  # dataset key: prompt ids + pixels are re-read from it
    response_ids: np.ndarray
    behaviour_logps: np.ndarray  # per-token log-probs of the policy that sampled it
    extras: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Sample:
    payload: Any  # opaque to SSB (e.g. `Payload`); stored and returned as is
    reward: float
    advantage: float
    policy_version: int  # version of the policy that generated it

    def __post_init__(self):
        object.__setattr__(self, "reward", float(self.reward))
        object.__setattr__(self, "advantage", float(self.advantage))
        object.__setattr__(self, "policy_version", int(self.policy_version))
        if not math.isfinite(self.advantage):
            raise ValueError(f"Sample.advantage must be finite, got {self.advantage}")


@dataclass(frozen=True, eq=False)
class BufferEntry:
    entry_id: int
    sample: Sample
    insert_step: int
    reuse_count: int = 0


def encode_value(v: Any) -> Any:
    """Dataclasses / mappings / sequences of arrays and scalars -> JSON/msgpack-able data."""
    if isinstance(v, np.ndarray):
        return {ARRAY_KEY: encode_array(v)}
    if is_dataclass(v) and not isinstance(v, type):
        return {f.name: encode_value(getattr(v, f.name)) for f in fields(v)}
    if isinstance(v, Mapping):
        return {str(k): encode_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [encode_value(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"SSB state: cannot encode a value of type {type(v).__name__}")


def decode_value(data: Any, hint: Any) -> Any:
    """Inverse of `encode_value`, guided by the type hint (dataclass fields' annotations)."""
    if isinstance(data, np.ndarray):  # already decoded by the checkpoint reader
        return data
    if is_encoded_array(data):
        return decode_array(data[ARRAY_KEY])
    if isinstance(hint, type) and is_dataclass(hint):
        hints = get_type_hints(hint)
        return hint(**{f.name: decode_value(data[f.name], hints[f.name]) for f in fields(hint) if f.init})
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        classes = [a for a in args if isinstance(a, type) and is_dataclass(a)]
        return decode_value(data, classes[0] if classes and isinstance(data, Mapping) else Any)
    if isinstance(data, list):
        item = args[0] if origin in (list, tuple) and args else Any
        out = [decode_value(x, item) for x in data]
        return tuple(out) if origin is tuple else out
    if isinstance(data, Mapping):
        item = args[1] if len(args) == 2 else Any
        return {k: decode_value(x, item) for k, x in data.items()}
    return data


def _new_rng_state(seed: int) -> dict:
    return np.random.default_rng(seed).bit_generator.state


@dataclass(frozen=True, eq=False)
class SSBState:
    entries: tuple[BufferEntry, ...]
    next_entry_id: int
    rng_state: dict  # numpy PCG64 bit-generator state

    @classmethod
    def init(cls, seed: int) -> "SSBState":
        return cls((), 0, _new_rng_state(seed))

    def state_dict(self) -> dict:
        """Plain data (str/int/float/list/dict): JSON- and msgpack-able (128-bit RNG words as
        str, arrays as dtype + shape + base64 bytes: exact)."""
        rng = self.rng_state
        if rng.get("bit_generator") != "PCG64":
            raise ValueError(f"SSBState.state_dict: only PCG64 RNG states, got {rng.get('bit_generator')!r}")
        return {
            "format": 1,
            "next_entry_id": self.next_entry_id,
            "rng": {"bit_generator": "PCG64", "state": str(rng["state"]["state"]), "inc": str(rng["state"]["inc"]),
                    "has_uint32": int(rng["has_uint32"]), "uinteger": int(rng["uinteger"])},
            "entries": [_entry_to_dict(e) for e in self.entries],
        }

    @classmethod
    def from_state_dict(cls, d: Mapping, payload_type: type = Payload) -> "SSBState":
        """Inverse of `state_dict`; payloads are rebuilt as `payload_type` (a dataclass)."""
        missing = {"format", "next_entry_id", "rng", "entries"} - set(d)
        if missing:
            raise ValueError(f"SSBState.from_state_dict: missing keys {sorted(missing)}")
        if d["format"] != 1:
            raise ValueError(f"SSBState.from_state_dict: unknown format {d['format']!r}")
        r = d["rng"]
        rng = {"bit_generator": r["bit_generator"], "state": {"state": int(r["state"]), "inc": int(r["inc"])},
               "has_uint32": int(r["has_uint32"]), "uinteger": int(r["uinteger"])}
        entries = tuple(_entry_from_dict(e, i, payload_type) for i, e in enumerate(d["entries"]))
        return cls(entries, int(d["next_entry_id"]), rng)


def _entry_to_dict(e: BufferEntry) -> dict:
    return {"entry_id": e.entry_id, "insert_step": e.insert_step, "reuse_count": e.reuse_count,
            "reward": e.sample.reward, "advantage": e.sample.advantage, "policy_version": e.sample.policy_version,
            "payload": encode_value(e.sample.payload)}


def _entry_from_dict(d: Mapping, index: int, payload_type: type) -> BufferEntry:
    try:
        sample = Sample(decode_value(d["payload"], payload_type), d["reward"], d["advantage"], d["policy_version"])
        return BufferEntry(int(d["entry_id"]), sample, int(d["insert_step"]), int(d["reuse_count"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"SSBState.from_state_dict: entries[{index}] is malformed: {e!r}") from e


@dataclass(frozen=True)
class SSBMetrics:
    effective_ratio_fresh: float  # |A| > tol among the fresh rollout
    effective_ratio_batch: float  # |A| > tol in the update batch (replays are all effective)
    replay_ratio: float  # replayed share of the update batch
    buffer_size: int  # after this step's insertions and evictions
    mean_staleness: float  # policy versions behind, mean over this step's replays (0 if none)
    evicted: int  # removed for capacity
    dropped_stale: int  # removed for age > max_staleness
    dropped_reused: int  # removed after their max_reuse-th replay
    inserted: int

    def as_dict(self) -> dict[str, float]:
        return {f"ssb/{k}": float(v) for k, v in asdict(self).items()}


@dataclass(frozen=True, eq=False)
class SSBBatch:
    samples: tuple[Sample, ...]
    replayed: np.ndarray  # bool [B]
    entry_ids: np.ndarray  # int64 [B], -1 for fresh samples
    staleness: np.ndarray  # int32 [B], current policy version - sample's version
    off_policy: tuple[str, ...]  # "on_policy" (fresh) | config.off_policy (replayed)
    is_cap: float
    metrics: SSBMetrics


def replay_priority(advantages: np.ndarray, alpha: float, floor: float) -> np.ndarray:
    """|A|^alpha + floor (fp64)."""
    return np.abs(np.asarray(advantages, np.float64)) ** alpha + floor


def sample_without_replacement(rng: np.random.Generator, priorities: np.ndarray, k: int) -> np.ndarray:
    """k distinct indices, successively drawn with P(i) ~ priorities[i] among those left."""
    p = np.asarray(priorities, np.float64)
    if k == 0:
        return np.zeros(0, np.int64)
    return rng.choice(p.size, size=k, replace=False, p=p / p.sum()).astype(np.int64)


def _evict(entries: list[BufferEntry], config: SSBConfig) -> tuple[list[BufferEntry], int]:
    excess = len(entries) - config.capacity
    if excess <= 0:
        return entries, 0
    prio = replay_priority([e.sample.advantage for e in entries], config.alpha, config.floor)
    if config.evict_by == "priority":
        key = lambda j: (prio[j], entries[j].insert_step, entries[j].entry_id)  # noqa: E731
    else:
        key = lambda j: (entries[j].insert_step, entries[j].entry_id)  # noqa: E731
    gone = set(sorted(range(len(entries)), key=key)[:excess])
    return [e for j, e in enumerate(entries) if j not in gone], excess


def assemble_batch(
    state: SSBState, fresh: Sequence[Sample], *, step: int, policy_version: int, config: SSBConfig
) -> tuple[SSBState, SSBBatch]:
    """(new state, update batch of len(fresh) samples); pure: `state` is not modified."""
    if not fresh:
        raise ValueError("assemble_batch: the fresh rollout is empty")
    size = len(fresh)
    effective = [abs(s.advantage) > config.adv_tol for s in fresh]
    eff = [s for s, e in zip(fresh, effective) if e]
    zero = [s for s, e in zip(fresh, effective) if not e]
    age = lambda s: policy_version - s.policy_version  # noqa: E731
    if not config.enabled:
        metrics = SSBMetrics(len(eff) / size, len(eff) / size, 0.0, len(state.entries), 0.0, 0, 0, 0, 0)
        batch = SSBBatch(tuple(fresh), np.zeros(size, bool), np.full(size, -1, np.int64),
                         np.array([age(s) for s in fresh], np.int32), (ON_POLICY,) * size, config.is_cap, metrics)
        return state, batch

    live = [e for e in state.entries if age(e.sample) <= config.max_staleness]
    dropped_stale = len(state.entries) - len(live)
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = state.rng_state
    k = min(len(zero), int(math.floor(config.max_replay_ratio * size + 1e-9)), len(live))
    prio = replay_priority([e.sample.advantage for e in live], config.alpha, config.floor)
    picked = sample_without_replacement(rng, prio, k)
    replay_entries = [live[j] for j in picked]

    samples = eff + [e.sample for e in replay_entries] + zero[: len(zero) - k]
    replayed = np.array([False] * len(eff) + [True] * k + [False] * (len(zero) - k))
    entry_ids = np.array([-1] * len(eff) + [e.entry_id for e in replay_entries] + [-1] * (len(zero) - k), np.int64)
    staleness = np.array([age(s) for s in samples], np.int32)
    off_policy = tuple(config.off_policy if r else ON_POLICY for r in replayed)

    reused = {live[j].entry_id for j in picked}
    kept: list[BufferEntry] = []
    for e in live:
        if e.entry_id in reused:
            e = replace(e, reuse_count=e.reuse_count + 1)
        if e.reuse_count < config.max_reuse:
            kept.append(e)
    dropped_reused = len(live) - len(kept)
    new_entries = [BufferEntry(state.next_entry_id + i, s, step) for i, s in enumerate(eff)]
    kept, evicted = _evict(kept + new_entries, config)

    metrics = SSBMetrics(
        effective_ratio_fresh=len(eff) / size,
        effective_ratio_batch=(len(eff) + k) / size,
        replay_ratio=k / size,
        buffer_size=len(kept),
        mean_staleness=float(np.mean(staleness[replayed])) if k else 0.0,
        evicted=evicted, dropped_stale=dropped_stale, dropped_reused=dropped_reused, inserted=len(eff),
    )
    new_state = SSBState(tuple(kept), state.next_entry_id + len(eff), rng.bit_generator.state)
    return new_state, SSBBatch(tuple(samples), replayed, entry_ids, staleness, off_policy, config.is_cap, metrics)


class SelectiveSampleBuffer:
    """Mutable convenience holder around the pure `assemble_batch` (for a trainer loop)."""

    def __init__(self, config: SSBConfig, seed: int, payload_type: type = Payload):
        self.config, self.payload_type = config, payload_type
        self.state = SSBState.init(seed)

    def assemble(self, fresh: Sequence[Sample], *, step: int, policy_version: int) -> SSBBatch:
        self.state, batch = assemble_batch(self.state, fresh, step=step, policy_version=policy_version,
                                           config=self.config)
        return batch

    def state_dict(self) -> dict:
        return self.state.state_dict()

    def load_state_dict(self, d: Mapping) -> None:
        self.state = SSBState.from_state_dict(d, self.payload_type)

    def __len__(self) -> int:
        return len(self.state.entries)
