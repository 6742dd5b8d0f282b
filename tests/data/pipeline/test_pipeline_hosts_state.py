"""Two hosts see disjoint, complete shares of every epoch; a saved state resumes with the
very same next records (JSON round trip, worker threads prefetching ahead)."""

import json

import numpy as np
import pytest

from pipeline_helpers import PROMPT, RULES, TOKENIZER, record_dicts, write_jsonl
from r1v2_jax.data import records as R
from r1v2_jax.data.pipeline import InputPipeline, PipelineConfig, open_source
from r1v2_jax.data.pipeline.order import HostOrder


@pytest.mark.parametrize("n,hosts", [(7, 2), (6, 3), (5, 4)])
def test_host_orders_are_disjoint_and_complete(n, hosts):
    valid = np.arange(n) * 3 + 1  # row indices of the valid records (gaps: skipped rows)
    orders = [HostOrder(valid, seed=5, process_index=h, process_count=hosts)
              for h in range(hosts)]
    steps = 2 * n  # positions per host: 2n -> the hosts together cover 2*hosts epochs
    taken = {h: [o[j] for j in range(steps)] for h, o in enumerate(orders)}
    stream = [taken[k % hosts][k // hosts] for k in range(steps * hosts)]
    for e in range(2 * hosts):  # each epoch: every record once, in epoch_order
        assert stream[e * n:(e + 1) * n] == [int(valid[i]) for i in R.epoch_order(n, 5, e)]


def test_num_epochs_bounds_each_host():
    orders = [HostOrder(np.arange(7), 0, h, 2, num_epochs=2) for h in range(2)]
    assert [len(o) for o in orders] == [7, 7]
    orders = [HostOrder(np.arange(7), 0, h, 3, num_epochs=1) for h in range(3)]
    assert [len(o) for o in orders] == [3, 2, 2]  # 7 positions: 0,3,6 / 1,4 / 2,5


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory):
    return str(write_jsonl(tmp_path_factory.mktemp("hs") / "d.jsonl", record_dicts()))


def pipe(path, **kw):
    index, count = kw.pop("process_index", 0), kw.pop("process_count", 1)
    return InputPipeline(open_source(path), "prompt", RULES, TOKENIZER, PROMPT,
                         PipelineConfig(**kw), process_index=index, process_count=count)


def test_two_hosts_split_each_step(jsonl):
    hosts = [pipe(jsonl, batch_size=2, seed=3, process_index=h, process_count=2).batches()
             for h in range(2)]
    uids = [[[e.uid for e in next(it)] for _ in range(7)] for it in hosts]  # 28 = 4 epochs
    stream = [uids[k % 2][k // 2 // 2][k // 2 % 2] for k in range(28)]
    for e in range(4):
        assert sorted(stream[e * 7:(e + 1) * 7]) == list(range(7))
    assert stream[:7] == list(R.epoch_order(7, 3, 0))
    for step in range(7):  # a step within one epoch never gives a record to both hosts
        if (4 * step) // 7 == (4 * step + 3) // 7:
            assert not set(uids[0][step]) & set(uids[1][step]), step


@pytest.mark.parametrize("threads,consumed", [(1, 3), (3, 4), (3, 0)])
def test_resume_continues_with_the_same_records(jsonl, threads, consumed):
    it = pipe(jsonl, batch_size=2, seed=9, num_threads=threads, prefetch_buffer_size=4).batches()
    for _ in range(consumed):
        next(it)
    state = json.loads(json.dumps(it.get_state()))  # what the checkpoint stores
    expected = [[(e.uid, e.prompt_ids.tolist()) for e in next(it)] for _ in range(5)]
    resumed = pipe(jsonl, batch_size=2, seed=9, num_threads=threads,
                   prefetch_buffer_size=4).batches(state)
    assert [[(e.uid, e.prompt_ids.tolist()) for e in next(resumed)] for _ in range(5)] \
        == expected
    assert state["grain"] and state["fingerprint"]["seed"] == 9


def test_a_state_of_another_pipeline_is_refused(jsonl):
    state = pipe(jsonl, batch_size=2, seed=9).batches().get_state()
    with pytest.raises(ValueError, match=r"does not fit this pipeline.*'seed': \(9, 10\)"):
        pipe(jsonl, batch_size=2, seed=10).batches(state)
    with pytest.raises(ValueError, match=r"'process_count': \(1, 2\)"):
        pipe(jsonl, batch_size=2, seed=9, process_count=2).batches(state)
