"""The SSB state codec: every branch of encode_value / decode_value and the state_dict
checks, with exact values and messages (the round trips are in test_ssb.py)."""

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest

from r1v2_jax.rl.ssb import (BufferEntry, Payload, Sample, SSBState, decode_value,
                             encode_value)


def test_encode_value_branches():
    assert encode_value(None) is None
    assert encode_value((1, "a", 2.5, True)) == [1, "a", 2.5, True]
    assert encode_value({3: np.int64(4)}) == {"3": 4} and type(encode_value(np.int64(4))) is int
    assert type(encode_value(np.float32(0.5))) is float
    enc = encode_value(np.arange(2, dtype=np.int16))
    assert list(enc) == ["__ndarray__"] and enc["__ndarray__"]["dtype"] == "<i2"
    with pytest.raises(TypeError) as err:
        encode_value(object())
    assert str(err.value) == "SSB state: cannot encode a value of type object"
    with pytest.raises(TypeError, match="cannot encode a value of type set"):
        encode_value({"a": {1}})


@dataclass(frozen=True)
class Inner:
    x: int


@dataclass(frozen=True)
class Outer:
    maybe: Optional[Inner]
    either: Inner | str
    other: str | Inner  # the dataclass is not the first member of the union
    pairs: tuple[Inner, ...]
    table: dict[str, Inner]
    items: list[int]
    arr: np.ndarray


def test_decode_value_follows_the_hints():
    value = Outer(Inner(1), "s", Inner(8), (Inner(2), Inner(3)), {"k": Inner(4)}, [5, 6],
                  np.ones(2))
    back = decode_value(encode_value(value), Outer)
    assert back.maybe == Inner(1) and back.either == "s" and back.other == Inner(8)
    assert back.pairs == (Inner(2), Inner(3)) and type(back.pairs) is tuple
    assert back.table == {"k": Inner(4)} and back.items == [5, 6] and type(back.items) is list
    np.testing.assert_array_equal(back.arr, np.ones(2))
    none = decode_value(encode_value(Outer(None, Inner(7), "t", (), {}, [], np.zeros(0))), Outer)
    assert none.maybe is None and none.either == Inner(7) and none.pairs == ()
    arr = np.arange(3)
    assert decode_value(arr, Outer) is arr  # already decoded by the checkpoint reader
    assert decode_value({"a": [1, 2]}, dict) == {"a": [1, 2]}


def test_state_dict_layout_and_errors():
    payload = Payload(7, np.array([1, 2], np.int32), np.array([-0.5, -1.0], np.float32))
    state = SSBState((BufferEntry(5, Sample(payload, 1.0, 0.5, 3), 9, 2),), 6,
                     SSBState.init(0).rng_state)
    d = state.state_dict()
    assert d["format"] == 1 and d["next_entry_id"] == 6 and d["rng"]["bit_generator"] == "PCG64"
    assert isinstance(d["rng"]["state"], str) and isinstance(d["rng"]["inc"], str)
    e = d["entries"][0]
    assert {k: e[k] for k in ("entry_id", "insert_step", "reuse_count", "reward", "advantage",
                              "policy_version")} == dict(entry_id=5, insert_step=9, reuse_count=2,
                                                         reward=1.0, advantage=0.5,
                                                         policy_version=3)
    assert e["payload"]["prompt_ref"] == 7
    back = SSBState.from_state_dict(d)
    assert back.next_entry_id == 6 and back.rng_state == state.rng_state
    assert back.entries[0].sample.payload.prompt_ref == 7
    mt = SSBState((), 0, {**state.rng_state, "bit_generator": "MT19937"})
    with pytest.raises(ValueError) as err:
        mt.state_dict()
    assert str(err.value) == "SSBState.state_dict: only PCG64 RNG states, got 'MT19937'"
    with pytest.raises(ValueError) as err:
        SSBState.from_state_dict({"format": 1, "entries": []})
    assert str(err.value) == "SSBState.from_state_dict: missing keys ['next_entry_id', 'rng']"
    with pytest.raises(ValueError) as err:
        SSBState.from_state_dict({**d, "format": 2})
    assert str(err.value) == "SSBState.from_state_dict: unknown format 2"
