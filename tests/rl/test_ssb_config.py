"""SSBConfig: the documented defaults, every range check at its boundary, exact messages;
the value objects (Payload, Sample, BufferEntry): frozen, compared by identity, coerced."""

import dataclasses

import numpy as np
import pytest

from r1v2_jax.rl.ssb import BufferEntry, Payload, Sample, SSBConfig, SSBState


def test_defaults_are_the_documented_ones():
    # docs/rewards_and_ssb.md, "SSBConfig defaults"
    assert dataclasses.asdict(SSBConfig()) == dict(
        enabled=True, alpha=1.0, floor=1e-4, max_replay_ratio=0.5, max_staleness=4,
        max_reuse=4, capacity=4096, adv_tol=1e-6, off_policy="recompute", is_cap=2.0,
        evict_by="priority")


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SSBConfig().alpha = 2.0


@pytest.mark.parametrize("kw", [
    dict(max_staleness=0), dict(max_reuse=1), dict(capacity=1), dict(alpha=0.0),
    dict(floor=0.0), dict(adv_tol=0.0), dict(is_cap=0.5), dict(max_replay_ratio=0.0),
    dict(max_replay_ratio=1.0), dict(off_policy="truncated_is"), dict(evict_by="oldest"),
])
def test_boundary_values_are_accepted(kw):
    assert getattr(SSBConfig(**kw), next(iter(kw))) == next(iter(kw.values()))


BAD = "SSBConfig: alpha, floor, adv_tol must be >= 0 and is_cap > 0"


@pytest.mark.parametrize("kw,message", [
    (dict(off_policy="ignore"),
     "SSBConfig.off_policy must be one of ('recompute', 'truncated_is'), got 'ignore'"),
    (dict(evict_by="newest"),
     "SSBConfig.evict_by must be one of ('priority', 'oldest'), got 'newest'"),
    (dict(max_replay_ratio=1.5), "SSBConfig.max_replay_ratio must be in [0, 1], got 1.5"),
    (dict(max_replay_ratio=-0.1), "SSBConfig.max_replay_ratio must be in [0, 1], got -0.1"),
    (dict(max_staleness=-1), "SSBConfig.max_staleness is out of range: -1"),
    (dict(max_reuse=0), "SSBConfig.max_reuse is out of range: 0"),
    (dict(capacity=0), "SSBConfig.capacity is out of range: 0"),
    (dict(alpha=-0.5), BAD), (dict(floor=-1e-9), BAD), (dict(adv_tol=-1.0), BAD),
    (dict(is_cap=0.0), BAD),
])
def test_out_of_range_values_are_rejected_by_name(kw, message):
    with pytest.raises(ValueError) as err:
        SSBConfig(**kw)
    assert str(err.value) == message


def test_value_objects_are_frozen_and_compared_by_identity():
    ids, logps = np.arange(3), np.zeros(3, np.float32)
    p, q = Payload("a", ids, logps), Payload("a", ids, logps)
    assert p.extras == {} and p != q  # identity: array fields are never compared
    s, t = Sample(p, 1.0, 0.5, 2), Sample(p, 1.0, 0.5, 2)
    assert s != t and len({s, t}) == 2
    e = BufferEntry(0, s, 0)
    assert e != BufferEntry(0, s, 0)
    st = SSBState.init(0)
    assert st != SSBState(st.entries, st.next_entry_id, st.rng_state)
    for obj, name in ((p, "prompt_ref"), (s, "advantage"), (e, "reuse_count"),
                      (st, "next_entry_id")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, 1)


def test_sample_coerces_numpy_scalars_and_rejects_non_finite_advantages():
    s = Sample(None, np.float32(1.5), np.float64(-0.25), np.int64(3))
    assert (type(s.reward), type(s.advantage), type(s.policy_version)) == (float, float, int)
    assert (s.reward, s.advantage, s.policy_version) == (1.5, -0.25, 3)
    with pytest.raises(ValueError) as err:
        Sample(None, 0.0, float("inf"), 0)
    assert str(err.value) == "Sample.advantage must be finite, got inf"
