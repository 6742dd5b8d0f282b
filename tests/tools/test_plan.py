"""`r1v2 plan` on the tiny config (8 simulated devices, in a subprocess): the compiled
programs' per-device argument bytes equal the bytes of each input's shard computed here
from the rule table, donated state is updated in place, and the FLOPs are the analytic
ones."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from jax.sharding import AbstractMesh

from r1v2_jax.models import VLMConfig, abstract_params
from r1v2_jax.sharding import DEFAULT_RULES, logical_specs, parse_axis_sizes
from r1v2_jax.tools.flops import decode_step_cost, train_step_flops
from r1v2_jax.train.config_loader import load_config_file

ROOT = Path(__file__).resolve().parents[2]
MESH = AbstractMesh((2, 2, 2), ("data", "fsdp", "tensor"))
SEQ, DECODE_BATCH = 32, 8
SAMPLES, PROMPT = 2, 16  # 4 prompts x 2 samples, 16 prompt + 16 new tokens


def _plan(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT),
               XLA_FLAGS="--xla_backend_optimization_level=0")  # compile time only
    return subprocess.run([sys.executable, "-m", "r1v2_jax.cli", "plan", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan") / "plan.json"
    proc = _plan("--config", "configs/tiny.py", "--mesh", "data=2,fsdp=2,tensor=2",
                 "--seq-len", str(SEQ), "--decode-batch", str(DECODE_BATCH), "--num-samples",
                 str(SAMPLES), "--prompt-len", str(PROMPT), "--json", str(out),
                 tmp_path=out.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GRPO update" in proc.stdout and "decode loop, static batch of 8 rows" in proc.stdout
    return json.loads(out.read_text())


def _config():
    return VLMConfig.from_dict(load_config_file("configs/tiny.py").model)


def _shard_bytes(shape, spec, itemsize) -> int:
    dims = list(shape)
    for i, axes in enumerate(spec):
        for a in (axes,) if isinstance(axes, str) else (axes or ()):
            dims[i] //= MESH.shape[a]
    return math.prod(dims) * itemsize


def _param_bytes(part: str) -> int:
    boxed = abstract_params(_config(), boxed=True)[part]
    specs = jax.tree.leaves(logical_specs(boxed, MESH, DEFAULT_RULES))
    shapes = jax.tree.leaves(abstract_params(_config())[part])
    return sum(_shard_bytes(s.shape, p, s.dtype.itemsize) for s, p in zip(shapes, specs))


def test_train_step_argument_bytes_are_the_shards(report):
    g = report["programs"]["grpo_update"]
    assert report["trainable"] == "adapter" and g["micro_batch"] == 4  # one row per batch shard
    adapter = _param_bytes("adapter")
    frozen = _param_bytes("vision") + _param_bytes("text")
    # AdamW state: mu and nu shaped (and sharded) like the adapter + 2 int32 step counts.
    opt_state = 2 * adapter + 2 * 4
    image = 28 * 28 * 3 * 4
    # One row on each device: ids, attention mask, completion mask, old log-probs, advantage
    # and its image; without KL (beta=0) nor IS weights jit drops the reference copy and
    # the is_weights input, which the step does not read.
    batch = 2 * SEQ * 4 + 2 * (SEQ - 1) * 4 + 4 + image
    assert g["arguments"] == frozen + adapter + opt_state + batch
    assert g["aliased"] == adapter + opt_state  # new params and state overwrite the old
    assert g["peak"] == g["arguments"] + g["outputs"] - g["aliased"] + g["temporaries"]
    assert g["fits"] and g["temporaries"] > 0


def test_rollout_programs_are_the_engines_with_sharded_arguments(report):
    """The planner compiles the engine's own prefill and decode-loop programs; their
    per-device argument bytes are the shards of what `generate(..., mesh=)` passes."""
    p, d = report["programs"]["prefill"], report["programs"]["decode"]
    tc = _config().text
    prompts, per_dev = DECODE_BATCH // SAMPLES, DECODE_BATCH // SAMPLES // 4  # data x fsdp
    image = 28 * 28 * 3 * 4
    # prefill: every parameter, ids + lengths of its prompt and its tile
    assert p["arguments"] == (_param_bytes("vision") + _param_bytes("adapter")
                              + _param_bytes("text") + per_dev * (PROMPT * 4 + 4) + image)
    # decode: the LM's parameters, the prompt KV [B, P, Hkv, D] per layer (prompts over
    # data x fsdp, KV heads over tensor), prompt mask, last logits, lengths, 2 x sample ids
    # (8 rows over 4 shards) and 4 scalars (seed, temperature, top_p, max_new_tokens)
    prompt_kv = 2 * tc.num_hidden_layers * per_dev * PROMPT * (tc.num_key_value_heads // 2) \
        * tc.head_dim * 4
    rows = per_dev * (PROMPT + tc.vocab_size * 4 + 4) + 2 * (DECODE_BATCH // 4) * 4 + 4 * 4
    assert d["arguments"] == _param_bytes("text") + prompt_kv + rows
    assert d["prompts"] == prompts and d["rows"] == DECODE_BATCH and d["slots"] == 0
    per_row = 2 * tc.num_hidden_layers * tc.num_key_value_heads * tc.head_dim * 4
    assert d["kv_cache_bytes_total"] == DECODE_BATCH * SEQ * per_row
    assert d["prompt_kv_bytes_total"] == prompts * PROMPT * per_row
    # the decode loop's caches live in its temporaries: at least this device's share
    assert d["temporaries"] >= d["kv_cache_bytes_total"] // 8
    cost = decode_step_cost(_config(), DECODE_BATCH, SEQ, param_bytes=4, cache_bytes=4)
    assert d["flops"] == cost.flops and d["bytes_read"] == cost.bytes


def test_continuous_rollout_plan_holds_only_its_slots(tmp_path):
    out = tmp_path / "plan.json"
    proc = _plan("--config", "configs/tiny.py", "--mesh", "data=2,fsdp=2,tensor=2",
                 "--seq-len", str(SEQ), "--decode-batch", str(DECODE_BATCH), "--num-samples",
                 str(SAMPLES), "--prompt-len", str(PROMPT), "--slots", "4", "--skip-train",
                 "--json", str(out), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "continuous batching on 4 slots" in proc.stdout
    d = json.loads(out.read_text())["programs"]["decode"]
    tc = _config().text
    per_row = 2 * tc.num_hidden_layers * tc.num_key_value_heads * tc.head_dim * 4
    assert d["rows"] == 4 and d["kv_cache_bytes_total"] == 4 * SEQ * per_row


def test_flops_and_times_follow_the_analytic_counts(report):
    g = report["programs"]["grpo_update"]
    step = train_step_flops(_config(), 4, SEQ, 4, ("adapter",))
    assert g["model_flops"] == step.model and g["hardware_flops"] == step.model  # no remat
    assert g["seconds_at_peak"] == pytest.approx(step.model / 8 / report["chip"]["bf16_flops"])
    assert report["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2} and report["devices"] == 8


def test_batch_that_does_not_split_is_a_clear_error(tmp_path):
    proc = _plan("--config", "configs/tiny.py", "--mesh", "data=2,fsdp=2,tensor=2",
                 "--micro-batch", "6", "--skip-decode", tmp_path=tmp_path)
    assert proc.returncode == 2
    assert "micro-batch 6 does not split over the 4 batch shards" in proc.stderr


@pytest.mark.parametrize("text, message", [
    ("data=2,fsdp", "expected comma-separated AXIS=SIZE"),
    ("data=2,seq=4", "expected comma-separated AXIS=SIZE"),
    ("data=2,data=4", "expected comma-separated AXIS=SIZE"),
    ("fsdp=x", "must be an integer"),
    ("fsdp=0", "must be >= 1 or -1"),
])
def test_mesh_argument_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_axis_sizes(text)


def test_mesh_argument():
    assert parse_axis_sizes("data=1, fsdp=-1,tensor=8") == {"data": 1, "fsdp": -1, "tensor": 8}
