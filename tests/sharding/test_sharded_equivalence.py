"""Sharded over a data=2, fsdp=2, tensor=2 mesh of 8 simulated CPU devices, the VLM
forward and 3 GRPO training steps equal the single-device computation.

The simulated devices must be configured before JAX starts, so the computation runs in
a subprocess (`sharded_worker.py`); this process only compares the numbers.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
# Optimisation level 0 halves XLA's compile time on CPU; both sides of every comparison run
# in the same process with the same flags.
SIMULATED_8_DEVICES = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("sharded") / "results.npz"
    env = dict(os.environ, XLA_FLAGS=SIMULATED_8_DEVICES,
               JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "tests.sharding.sharded_worker", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = dict(np.load(out))
    data["info"] = json.loads(str(data["info"]))
    return data


def test_sharded_forward_equals_single_device(run):
    single, sharded = run["fwd_single"], run["fwd_sharded"]
    assert single.shape == (4, 20, 128) and np.abs(single).max() > 0.1
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-5)


def test_params_are_really_split(run):
    splits = run["info"]["forward"]["param_splits"]
    # fsdp x tensor: LM MLP kernels [L, E, F] in 4 pieces, the vocab-split head in 4 too.
    assert splits["['text']['layers']['mlp']['gate_proj']['kernel']"] == 4
    assert splits["['text']['lm_head']['kernel']"] == 4
    assert splits["['vision']['layers']['mlp']['fc1']['kernel']"] == 4
    assert run["info"]["forward"]["logits_split"] > 1  # the output stays sharded over the batch


def test_sharded_init_matches_init_params(run):
    keys = [k[len("init_single"):] for k in run if k.startswith("init_single")]
    assert len(keys) > 20
    for k in keys:
        np.testing.assert_allclose(run["init_sharded" + k], run["init_single" + k],
                                   rtol=1e-6, atol=1e-7, err_msg=k)


def test_sharded_grpo_training_equals_single_device(run):
    single, sharded = run["single_loss"], run["sharded_loss"]
    assert single.shape == (3,) and len(set(np.round(single, 6))) == 3  # the loss moves
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-6)
    keys = [k[len("single"):] for k in run if k.startswith("single[")]
    assert any("['text']" in k for k in keys) and any("['adapter']" in k for k in keys)
    for k in keys:
        np.testing.assert_allclose(run["sharded" + k], run["single" + k],
                                   rtol=1e-4, atol=1e-5, err_msg=k)
    assert run["info"]["grpo"]["ids_split"] == 4  # batch over data x fsdp
    assert run["info"]["grpo"]["param_splits"]["['text']['layers']['mlp']['up_proj']['kernel']"] == 4
