"""Two real JAX processes (jax.distributed on CPU) stream one file: each sees its own share,
the shares are disjoint and together complete, and processes killed after any batch and
restarted from their saved states continue with the same next records on every host."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from pipeline_helpers import record_dicts, write_jsonl

ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("two_process_worker.py")
BATCHES, BATCH = 5, 2  # as the worker


def _run(data, folder: Path, tag: str, resume: Path | None = None) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    procs = []
    for i in range(2):
        cmd = [sys.executable, str(WORKER), str(data), str(folder / f"{tag}{i}.json"),
               "--coordinator", f"127.0.0.1:{port}", "--process-id", str(i)]
        procs.append(subprocess.Popen(cmd + (["--resume", str(resume)] if resume else []),
                                      cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
    return [json.loads((folder / f"{tag}{i}.json").read_text()) for i in range(2)]


def test_two_processes_disjoint_complete_and_resumable(tmp_path):
    rows = record_dicts() + record_dicts()[:2]  # 9 records: an epoch ends mid-batch
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    first = _run(data, tmp_path, "run")
    assert [r["process_index"] for r in first] == [0, 1]
    assert all(r["process_count"] == 2 for r in first)
    # the global stream, position k = step*2*BATCH + j*2 + host: one epoch is 9 positions
    flat = {}
    for r in first:
        for step, uids in enumerate(r["uids"]):
            assert len(uids) == BATCH
            for j, uid in enumerate(uids):
                flat[step * 2 * BATCH + 2 * j + r["process_index"]] = uid
    epoch = [flat[k] for k in range(9)]
    assert sorted(epoch) == list(range(9))  # complete, and disjoint between the hosts
    assert sorted(flat[k] for k in range(9, 18)) == list(range(9))  # the next epoch too
    assert epoch != list(range(9))  # shuffled
    # kill after batch 2 on both hosts; restart both from their saved states
    after = 1
    states = {str(r["process_index"]): r["states"][after] for r in first}
    (tmp_path / "states.json").write_text(json.dumps(states))
    resumed = _run(data, tmp_path, "resumed", resume=tmp_path / "states.json")
    for r0, r1 in zip(first, resumed):
        assert r1["uids"][:BATCHES - after - 1] == r0["uids"][after + 1:]
