"""Generation on a data=2 x tensor=2 mesh spanning two JAX processes (127.0.0.1, CPU gloo
collectives, 2 simulated devices each) gives the same samples as one process with 4
devices, static and continuous."""

import numpy as np
import pytest

from tests.train.test_multiprocess import _free_port

FIELDS = ("tokens", "logprobs", "lengths", "truncated")


def _start(out, local_devices, extra):
    import os
    import subprocess
    import sys

    from tests.train.test_multiprocess import ROOT, XLA_FLAGS

    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=XLA_FLAGS, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "tests.generate.multiprocess_worker", "--out", str(out),
           "--local-devices", str(local_devices)] + extra
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multiprocess_generate")
    port = _free_port()
    procs = [_start(folder / "multi.npz", 2, ["--coordinator", f"127.0.0.1:{port}",
                                              "--num-processes", "2", "--process-id", str(i)])
             for i in range(2)] + [_start(folder / "single.npz", 4, [])]
    logs = []
    for proc in procs:
        try:
            text, _ = proc.communicate(timeout=400)
        except Exception:
            for p in procs:
                p.kill()
            raise
        logs.append((proc.returncode, text))
    for code, text in logs:
        assert code == 0, text[-4000:]
    return dict(np.load(folder / "multi.npz")), dict(np.load(folder / "single.npz"))


@pytest.mark.parametrize("kind", ["static", "continuous"])
def test_two_processes_give_the_tokens_of_one(runs, kind):
    multi, single = runs
    assert int(multi["num_processes"]) == 2 and int(single["num_processes"]) == 1
    assert single[f"{kind}/lengths"].min() < single[f"{kind}/lengths"].max()
    for k in ("tokens", "lengths", "truncated"):
        np.testing.assert_array_equal(multi[f"{kind}/{k}"], single[f"{kind}/{k}"], err_msg=k)
    np.testing.assert_allclose(multi[f"{kind}/logprobs"], single[f"{kind}/logprobs"], atol=1e-5)
