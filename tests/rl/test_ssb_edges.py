"""SSB batch assembly at its edges: the adv_tol boundary, eviction by one, eviction order
from the insert step (not the list position), the disabled mode's full metrics, messages."""

import dataclasses

import numpy as np
import pytest

from r1v2_jax.rl.ssb import (BufferEntry, Payload, Sample, SSBConfig, SSBMetrics, SSBState,
                             assemble_batch)


def _sample(adv, ref="p"):
    return Sample(Payload(ref, np.arange(2), np.zeros(2, np.float32)), 1.0, adv, 0)


def test_advantage_equal_to_adv_tol_is_not_effective():
    fresh = [_sample(0.5), _sample(0.50001), _sample(-0.5)]
    _, b = assemble_batch(SSBState.init(0), fresh, step=0, policy_version=0,
                          config=SSBConfig(adv_tol=0.5, max_replay_ratio=0.0))
    assert b.samples[0] is fresh[1] and b.metrics.inserted == 1
    assert b.metrics.effective_ratio_fresh == pytest.approx(1 / 3)
    assert b.metrics.mean_staleness == 0.0 and b.metrics.replay_ratio == 0.0  # no replay


@pytest.mark.parametrize("evict_by,left", [("priority", ["a", "c"]), ("oldest", ["b", "c"])])
def test_one_over_capacity_evicts_one(evict_by, left):
    cfg = SSBConfig(capacity=2, evict_by=evict_by, max_replay_ratio=0.0)
    state, _ = assemble_batch(SSBState.init(0), [_sample(3.0, "a"), _sample(0.1, "b")], step=0,
                              policy_version=0, config=cfg)
    state, b = assemble_batch(state, [_sample(2.0, "c")], step=1, policy_version=0, config=cfg)
    assert [e.sample.payload.prompt_ref for e in state.entries] == left and b.metrics.evicted == 1


def test_oldest_eviction_follows_insert_step_not_list_position():
    # a restored state may list its entries in any order
    entries = (BufferEntry(7, _sample(1.0, "new"), insert_step=5),
               BufferEntry(3, _sample(1.0, "old"), insert_step=1))
    state = SSBState(entries, 8, SSBState.init(0).rng_state)
    new, _ = assemble_batch(state, [_sample(1.0, "fresh")], step=6, policy_version=0,
                            config=SSBConfig(capacity=2, evict_by="oldest", max_replay_ratio=0.0))
    assert [e.sample.payload.prompt_ref for e in new.entries] == ["new", "fresh"]


def test_disabled_metrics_and_ids_in_full():
    state = SSBState(tuple(BufferEntry(i, _sample(1.0), 0) for i in range(2)), 2,
                     SSBState.init(0).rng_state)
    _, b = assemble_batch(state, [_sample(0.0), _sample(1.0)], step=3, policy_version=0,
                          config=SSBConfig(enabled=False))
    assert b.metrics == SSBMetrics(0.5, 0.5, 0.0, 2, 0.0, 0, 0, 0, 0)
    assert b.entry_ids.tolist() == [-1, -1] and b.entry_ids.dtype == np.int64


def test_batch_and_metrics_are_frozen_and_the_batch_compared_by_identity():
    _, b = assemble_batch(SSBState.init(0), [_sample(1.0)], step=0, policy_version=0,
                          config=SSBConfig())
    for obj, name in ((b, "is_cap"), (b.metrics, "inserted")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, 0)
    assert b != dataclasses.replace(b)  # array fields are never compared


def test_messages():
    with pytest.raises(ValueError) as err:
        assemble_batch(SSBState.init(0), [], step=0, policy_version=0, config=SSBConfig())
    assert str(err.value) == "assemble_batch: the fresh rollout is empty"
    bad = SSBState.init(0).state_dict()
    bad["entries"] = [{"entry_id": 0}]
    with pytest.raises(ValueError) as err:
        SSBState.from_state_dict(bad)
    assert str(err.value) == "SSBState.from_state_dict: entries[0] is malformed: KeyError('payload')"
