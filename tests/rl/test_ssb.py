"""Selective Sample Buffer: batch assembly, replay frequencies, limits, resume."""

import itertools
import json
from dataclasses import dataclass, replace

import msgpack
import numpy as np
import pytest
from scipy.stats import chisquare

from r1v2_jax.train.host_state import decode_tree, encode_tree
from r1v2_jax.rl.ssb import (
    BufferEntry,
    Payload,
    Sample,
    SelectiveSampleBuffer,
    SSBConfig,
    SSBState,
    assemble_batch,
    replay_priority,
    sample_without_replacement,
)


def make_sample(adv, version=0, ref="p0", n=3):
    ids = np.arange(n, dtype=np.int32) + int(abs(adv) * 100)
    payload = Payload(ref, ids, np.full(n, -0.5, np.float32), {"mask": np.ones(n, np.int8)})
    return Sample(payload, reward=float(adv > 0), advantage=adv, policy_version=version)


def filled_state(advs, version=0, seed=0):
    entries = tuple(BufferEntry(i, make_sample(a, version, f"b{i}"), insert_step=0) for i, a in enumerate(advs))
    return SSBState(entries, len(advs), SSBState.init(seed).rng_state)


def test_disabled_is_exactly_the_fresh_batch():
    fresh = [make_sample(a) for a in (0.0, 1.0, 0.0, -0.7)]
    state = filled_state([2.0, 3.0])
    new, batch = assemble_batch(state, fresh, step=1, policy_version=1, config=SSBConfig(enabled=False))
    assert batch.samples == tuple(fresh) and new is state
    assert not batch.replayed.any() and batch.off_policy == ("on_policy",) * 4
    assert batch.metrics.effective_ratio_batch == 0.5 and batch.metrics.replay_ratio == 0.0
    # replay share 0 with an empty buffer: also just the fresh samples (effective ones first)
    _, b0 = assemble_batch(SSBState.init(0), fresh, step=1, policy_version=1, config=SSBConfig(max_replay_ratio=0.0))
    assert set(map(id, b0.samples)) == set(map(id, fresh))


def test_batch_layout_cap_and_metrics():
    state = filled_state([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5], version=0)
    fresh = [make_sample(a, version=2) for a in (0.8, 0.0, 0.0, -0.4, 0.0, 0.0, 0.0, 0.0, 1e-9, 0.9)]
    cfg = SSBConfig(max_replay_ratio=0.5, max_reuse=1)
    new, batch = assemble_batch(state, fresh, step=5, policy_version=2, config=cfg)
    eff = [fresh[0], fresh[3], fresh[9]]  # |A| > 1e-6, in rollout order
    assert batch.samples[:3] == tuple(eff)
    assert batch.replayed.tolist() == [False] * 3 + [True] * 5 + [False] * 2  # cap: 5 of 7 zero slots
    assert batch.samples[8:] == (fresh[1], fresh[2])  # leftover zero-advantage fresh samples
    assert len(set(batch.entry_ids[3:8].tolist())) == 5 and (batch.entry_ids[[0, 1, 2, 8, 9]] == -1).all()
    assert batch.staleness.tolist() == [0] * 3 + [2] * 5 + [0] * 2
    assert batch.off_policy == ("on_policy",) * 3 + ("recompute",) * 5 + ("on_policy",) * 2
    m = batch.metrics
    assert (m.effective_ratio_fresh, m.effective_ratio_batch, m.replay_ratio) == (0.3, 0.8, 0.5)
    assert (m.mean_staleness, m.inserted, m.dropped_reused, m.buffer_size) == (2.0, 3, 5, 7 - 5 + 3)
    assert m.as_dict()["ssb/buffer_size"] == 5.0
    new_ids = [e.entry_id for e in new.entries]
    assert new_ids[-3:] == [7, 8, 9] and new.next_entry_id == 10
    assert all(e.insert_step == 5 for e in new.entries[-3:])
    # truncated_is is recorded per replayed sample, with its cap
    _, b2 = assemble_batch(state, fresh, step=5, policy_version=2, config=replace(cfg, off_policy="truncated_is",
                                                                                   is_cap=3.0))
    assert b2.off_policy[3:8] == ("truncated_is",) * 5 and b2.is_cap == 3.0


def test_replay_never_exceeds_buffer_or_zero_slots():
    fresh = [make_sample(a) for a in (0.0, 0.0, 0.0, 1.0)]
    _, b = assemble_batch(filled_state([1.0]), fresh, step=1, policy_version=0, config=SSBConfig(max_replay_ratio=1.0))
    assert b.replayed.sum() == 1 and len(b.samples) == 4
    all_effective = [make_sample(a) for a in (1.0, -1.0)]
    _, b = assemble_batch(filled_state([1.0, 2.0]), all_effective, step=1, policy_version=0, config=SSBConfig())
    assert b.replayed.sum() == 0


def test_replay_priority_hand_values():
    # |A|^alpha + floor, written out: alpha=2 squares, alpha=0.5 takes the square root
    np.testing.assert_allclose(replay_priority([0.5, -2.0, 0.0], 2.0, 0.1), [0.35, 4.1, 0.1])
    np.testing.assert_allclose(replay_priority([0.25, -4.0], 0.5, 0.01), [0.51, 2.01])


# Non-default alphas only: with alpha=1 a priority that ignores alpha looks right.
@pytest.mark.parametrize("alpha,weights", [
    (2.0, [0.06, 0.30, 1.05, 4.05, 0.05]),  # |A|^2 + 0.05 for A = 0.1, -0.5, 1, 2, 0
    (0.5, [0.3662278, 0.7571068, 1.05, 1.4642136, 0.05]),  # sqrt|A| + 0.05
])
def test_single_slot_frequencies_follow_priority(alpha, weights):
    advs = [0.1, -0.5, 1.0, 2.0, 0.0]  # a stored 0 is reachable only through the floor
    cfg = SSBConfig(alpha=alpha, floor=0.05, max_replay_ratio=0.5, max_reuse=10**9)
    state = filled_state(advs)
    fresh = [make_sample(1.0), make_sample(0.0)]  # exactly one replay slot
    counts = np.zeros(len(advs))
    for _ in range(6000):
        new, batch = assemble_batch(state, fresh, step=1, policy_version=0, config=cfg)
        counts[batch.entry_ids[1]] += 1
        state = replace(state, rng_state=new.rng_state)  # same entries, next RNG draw
    p = np.asarray(weights)  # computed by hand, not with replay_priority
    expected = p / p.sum() * counts.sum()
    assert chisquare(counts, expected).pvalue > 1e-3
    np.testing.assert_allclose(counts / counts.sum(), p / p.sum(), atol=0.02)


def test_without_replacement_inclusion_matches_successive_sampling():
    w = np.array([1.0, 2.0, 3.0, 4.0])
    exact = np.zeros(4)  # P(i in sample of 2) = sum over ordered pairs containing i
    for i, j in itertools.permutations(range(4), 2):
        prob = w[i] / w.sum() * w[j] / (w.sum() - w[i])
        exact[i] += prob
        exact[j] += prob
    rng = np.random.default_rng(123)
    hits = np.zeros(4)
    for _ in range(20000):
        picked = sample_without_replacement(rng, w, 2)
        assert len(set(picked.tolist())) == 2
        hits[picked] += 1
    np.testing.assert_allclose(hits / 20000, exact, atol=0.015)


def test_staleness_limit():
    state = SSBState(tuple(BufferEntry(v, make_sample(1.0, version=v), insert_step=v) for v in range(6)), 6,
                     SSBState.init(0).rng_state)
    fresh = [make_sample(0.0, version=5)] * 8
    new, batch = assemble_batch(state, fresh, step=6, policy_version=5, config=SSBConfig(max_staleness=4,
                                                                                         max_replay_ratio=1.0))
    assert batch.metrics.dropped_stale == 1  # version 0 is 5 versions behind
    assert sorted(batch.entry_ids[batch.replayed].tolist()) == [1, 2, 3, 4, 5]
    assert batch.staleness[batch.replayed].max() == 4 and batch.metrics.mean_staleness == 2.0
    assert 0 not in [e.entry_id for e in new.entries]


def test_reuse_limit():
    cfg = SSBConfig(max_reuse=2, max_replay_ratio=1.0)
    state = filled_state([1.0])
    fresh = [make_sample(0.0)]
    replays = []
    for step in range(1, 5):
        state, batch = assemble_batch(state, fresh, step=step, policy_version=0, config=cfg)
        replays.append(int(batch.replayed.sum()))
        if step == 1:
            assert state.entries[0].reuse_count == 1
    assert replays == [1, 1, 0, 0] and len(state.entries) == 0


@pytest.mark.parametrize("evict_by,expected_left", [("priority", [1, 2, 4]), ("oldest", [2, 3, 4])])
def test_capacity_eviction(evict_by, expected_left):
    cfg = SSBConfig(capacity=3, evict_by=evict_by, max_replay_ratio=0.0)
    state = SSBState.init(0)
    state, _ = assemble_batch(state, [make_sample(a) for a in (0.1, 3.0)], step=0, policy_version=0, config=cfg)
    state, b = assemble_batch(state, [make_sample(a) for a in (2.0, 0.5, -1.0)], step=1, policy_version=0,
                              config=cfg)
    assert [e.entry_id for e in state.entries] == expected_left and b.metrics.evicted == 2
    assert b.metrics.buffer_size == 3


def _fresh_rollout(rng, step, size=8):
    advs = np.where(rng.random(size) < 0.5, 0.0, rng.normal(size=size))
    return [make_sample(float(a), version=step, ref=f"s{step}_{i}") for i, a in enumerate(advs)]


def _run(steps, cfg, resume_at=None, codec=json):
    data_rng = np.random.default_rng(7)
    ssb = SelectiveSampleBuffer(cfg, seed=11)
    log = []
    for step in range(steps):
        if step == resume_at:
            blob = codec.dumps(ssb.state_dict())
            ssb = SelectiveSampleBuffer(cfg, seed=999)  # a fresh process; seed is overwritten
            ssb.load_state_dict(codec.loads(blob))
        batch = ssb.assemble(_fresh_rollout(data_rng, step), step=step, policy_version=step)
        log.append((batch.entry_ids.tolist(), [s.payload.prompt_ref for s in batch.samples],
                    [s.payload.response_ids.tolist() for s in batch.samples], batch.metrics))
        ids = [e.entry_id for e in ssb.state.entries]
        assert len(ids) == len(set(ids)), "duplicated buffer entry"
    return ssb, log


class CheckpointHostCodec:
    """The SSB state as the trainers' checkpoints hold it: inside the host dict, written and
    read by train/checkpoint.py's codec (which once mistook the buffer's arrays for its own)."""

    @staticmethod
    def dumps(state):
        return json.dumps(encode_tree({"ssb": state, "counters": {"x": np.int64(3)}}))

    @staticmethod
    def loads(blob):
        return decode_tree(json.loads(blob))["ssb"]


@pytest.mark.parametrize("codec", [json, msgpack, CheckpointHostCodec])
def test_resume_continues_exactly(codec):
    cfg = SSBConfig(capacity=10, max_staleness=2, max_reuse=2)
    full, log_full = _run(12, cfg)
    resumed, log_resumed = _run(12, cfg, resume_at=6, codec=codec)
    assert log_resumed == log_full
    assert json.dumps(resumed.state_dict()) == json.dumps(full.state_dict())
    # bookkeeping: every inserted entry is in the buffer or was removed for a counted reason
    m = [entry[3] for entry in log_full]
    removed = sum(x.evicted + x.dropped_stale + x.dropped_reused for x in m)
    assert sum(x.inserted for x in m) - removed == len(full) == m[-1].buffer_size > 0
    assert sum(x.replay_ratio for x in m[6:]) > 0 and sum(x.evicted + x.dropped_stale for x in m) > 0


def test_payload_codec_custom_dataclass():
    @dataclass(frozen=True)
    class Inner:
        pixels: np.ndarray
        name: str

    @dataclass(frozen=True)
    class Custom:
        inner: Inner
        ids: np.ndarray
        tags: tuple[int, ...]
        extra: dict[str, np.ndarray]

    payload = Custom(Inner(np.random.default_rng(0).random((2, 3), dtype=np.float32), "img"),
                     np.array([1, 2], np.int64), (4, 5), {"m": np.zeros((0, 2), np.bool_)})
    state = SSBState((BufferEntry(3, Sample(payload, 1.0, -0.25, 2), 9, 1),), 4, SSBState.init(1).rng_state)
    back = SSBState.from_state_dict(json.loads(json.dumps(state.state_dict())), payload_type=Custom)
    e = back.entries[0]
    assert (e.entry_id, e.insert_step, e.reuse_count) == (3, 9, 1)
    assert (e.sample.advantage, e.sample.policy_version) == (-0.25, 2)
    p = e.sample.payload
    assert isinstance(p, Custom) and p.inner.name == "img" and p.tags == (4, 5)
    np.testing.assert_array_equal(p.inner.pixels, payload.inner.pixels)
    assert p.inner.pixels.dtype == np.float32 and p.extra["m"].shape == (0, 2) and p.ids.dtype == np.int64
    assert back.rng_state == state.rng_state


def test_errors():
    with pytest.raises(ValueError, match="off_policy"):
        SSBConfig(off_policy="ignore")
    with pytest.raises(ValueError, match="max_replay_ratio"):
        SSBConfig(max_replay_ratio=1.5)
    with pytest.raises(ValueError, match="empty"):
        assemble_batch(SSBState.init(0), [], step=0, policy_version=0, config=SSBConfig())
    with pytest.raises(ValueError, match="finite"):
        Sample(make_sample(1.0).payload, 1.0, float("nan"), 0)
    bad = SSBState.init(0).state_dict()
    bad["entries"] = [{"entry_id": 0}]
    with pytest.raises(ValueError, match=r"entries\[0\] is malformed"):
        SSBState.from_state_dict(bad)
