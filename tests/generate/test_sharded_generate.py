"""Sharded generation on 8 simulated CPU devices (tensor=4; data=4 x tensor=2) equals the
single-device engine: the same greedy tokens, the same sampled tokens with log-probs within
1e-4, static and continuous; parameters and KV caches are really split; a GRPO trainer
given a mesh rolls out through it.

The simulated devices must be configured before JAX starts, so the generation runs in a
subprocess (`sharded_worker.py`); this process only compares the numbers.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SIMULATED_8_DEVICES = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
FIELDS = ("tokens", "logprobs", "lengths", "truncated")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("sharded_generate") / "results.npz"
    env = dict(os.environ, XLA_FLAGS=SIMULATED_8_DEVICES, JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "tests.generate.sharded_worker", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = dict(np.load(out))
    data["info"] = json.loads(str(data["info"]))
    return data


def _get(run, mesh, kind):
    return {k: run[f"{mesh}/{kind}/{k}"] for k in FIELDS}


@pytest.mark.parametrize("mesh", ["tensor4", "data4_tensor2"])
@pytest.mark.parametrize("kind", ["greedy", "sampled", "continuous"])
def test_sharded_generation_equals_one_device(run, mesh, kind):
    single, sharded = _get(run, "single", kind), _get(run, mesh, kind)
    lengths = single["lengths"]
    assert lengths.min() < lengths.max() == 12  # stops at varied steps, and the limit
    for k in ("tokens", "lengths", "truncated"):
        np.testing.assert_array_equal(sharded[k], single[k], err_msg=k)
    np.testing.assert_allclose(sharded["logprobs"], single["logprobs"], rtol=0, atol=1e-4)
    assert single["logprobs"].min() < -0.5  # real probabilities, not degenerate ones


def test_continuous_equals_static_on_one_device(run):
    for k in ("tokens", "lengths", "truncated"):
        np.testing.assert_array_equal(run[f"single/continuous/{k}"], run[f"single/sampled/{k}"])
    # 4 slots vs 8 rows: another matmul batch size, ~1e-7 apart
    np.testing.assert_allclose(run["single/continuous/logprobs"], run["single/sampled/logprobs"],
                               rtol=0, atol=1e-5)


def test_params_caches_and_rows_are_split(run):
    info = run["info"]
    # KV cache [B, S, Hkv, D] of one layer: rows over data, KV heads over tensor
    assert info["tensor4"]["cache_spec"] == ["None", "None", "tensor"]
    assert info["data4_tensor2"]["cache_spec"] == ["data", "None", "tensor"]
    assert info["tensor4"]["qproj_split"] == 4 and info["data4_tensor2"]["qproj_split"] == 2
    # outputs come back replicated: every process of a multi-process mesh can read them
    assert int(run["data4_tensor2/sampled/rows_split"]) == 1


def test_the_grpo_trainer_on_a_mesh_rolls_out_through_sharded_generation(run):
    t = run["info"]["trainer"]
    assert t["plans"] >= 1 and t["on_mesh"] and t["response_len_mean"] > 0
