"""Two JAX processes on one machine (127.0.0.1, CPU "gloo" collectives, 2 simulated devices
each) run GRPO and MPO steps on a mesh spanning both, loading only their own rows of the
batch; the losses and parameters equal one process with 4 devices.

Also the pure parts of `r1v2_jax.train.distributed`: choosing how to start.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from r1v2_jax.train.distributed import ClusterSpec, resolve_cluster

ROOT = Path(__file__).resolve().parents[2]
# Compile-time flag only (halves XLA's CPU compile time); identical in every process.
XLA_FLAGS = "--xla_backend_optimization_level=0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(out: Path, local_devices: int, extra: list[str]) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=XLA_FLAGS, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "tests.train.multiprocess_worker", "--out", str(out),
           "--local-devices", str(local_devices)] + extra
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multiprocess")
    port = _free_port()
    multi = [_start(folder / "multi.npz", 2, ["--coordinator", f"127.0.0.1:{port}",
                                              "--num-processes", "2", "--process-id", str(i)])
             for i in range(2)]
    single = _start(folder / "single.npz", 4, [])
    logs = []
    for proc in multi + [single]:
        try:
            text, _ = proc.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            for p in multi + [single]:
                p.kill()
            raise
        logs.append((proc.returncode, text))
    for code, text in logs:
        assert code == 0, text[-4000:]
    load = lambda name: dict(np.load(folder / name))
    return load("multi.npz"), load("multi.p1.npz"), load("single.npz")


def test_two_processes_equal_one_process(runs):
    multi, _, single = runs
    assert int(multi["num_processes"]) == 2 and int(single["num_processes"]) == 1
    for name in ("grpo_loss", "mpo_loss"):
        assert single[name].shape == (2,) and single[name][0] != single[name][1]
        np.testing.assert_allclose(multi[name], single[name], rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(multi["mpo_delta"], single["mpo_delta"], rtol=1e-5, atol=1e-6)
    keys = [k for k in single if k.startswith(("grpo[", "mpo["))]
    assert len(keys) > 40
    for k in keys:
        np.testing.assert_allclose(multi[k], single[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_each_process_loads_only_its_rows(runs):
    multi, other, single = runs
    # Micro-batches of 4 rows split over fsdp=2: process 0 rows [0, 2), process 1 [2, 4).
    assert multi["local_rows"].tolist() == [0, 2]
    assert other["local_rows"].tolist() == [2, 4]
    assert single["local_rows"].tolist() == [0, 4]


def test_broadcast_gives_process_zeros_value(runs):
    multi, other, _ = runs
    assert int(multi["broadcast"]) == 7 and int(other["broadcast"]) == 7  # not 8 on process 1


def test_cluster_resolution():
    assert resolve_cluster(env={}, on_tpu_vm=False) == ClusterSpec("single")
    assert resolve_cluster(env={}, on_tpu_vm=True) == ClusterSpec("tpu")
    slurm = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16", "SLURM_PROCID": "3"}
    assert resolve_cluster(env=slurm, on_tpu_vm=False) == ClusterSpec("slurm")
    assert resolve_cluster(env={**slurm, "SLURM_NTASKS": "1"}, on_tpu_vm=False).kind == "single"
    # Explicit flags win over the environment.
    assert resolve_cluster("10.0.0.1:1234", 16, 3, env=slurm, on_tpu_vm=True) == ClusterSpec(
        "explicit", "10.0.0.1:1234", 16, 3)


@pytest.mark.parametrize("args, message", [
    (("h:1", None, 0), "missing \\['num_processes'\\]"),
    (("h:1", 2, 2), "process_id 2 is not in"),
    (("host", 2, 0), "HOST:PORT"),
])
def test_cluster_resolution_errors(args, message):
    with pytest.raises(ValueError, match=message):
        resolve_cluster(*args, env={}, on_tpu_vm=False)


def test_environment_clusters_take_no_flags():
    with pytest.raises(ValueError, match="takes no coordinator"):
        resolve_cluster(None, 2, None, cluster="tpu", env={})
