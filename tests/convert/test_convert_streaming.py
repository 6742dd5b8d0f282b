"""The streaming HF -> JAX writer: orbax's own file format, and memory bounded by one tensor."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp

from r1v2_jax.convert import save_hf
from r1v2_jax.convert.mapping import leaf_shapes, rules_for, unflatten
from r1v2_jax.convert.streaming import chunk_shape, open_leaf_writers, orbax_tree_metadata
from r1v2_jax.models.config import TextConfig, VisionConfig, VLMConfig

REPO = Path(__file__).resolve().parents[2]


def test_chunk_shape():
    assert chunk_shape((64, 5120, 27648), 2, True, 1 << 30) == (1, 5120, 27648)
    # 152064 x 5120 bf16 = 1.56 GB -> two chunks of rows under 1 GiB
    assert chunk_shape((152064, 5120), 2, False, 1 << 30) == (76032, 5120)
    assert chunk_shape((4, 10, 3), 4, True, 48) == (1, 4, 3)  # 10 rows of 12 bytes -> 4 per chunk
    assert chunk_shape((7,), 4, False, 1 << 30) == (7,)


def test_files_match_what_orbax_writes(tmp_path):
    tree = {"a": {"b": np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
                  .astype(ml_dtypes.bfloat16)},
            "c": np.linspace(0, 1, 5, dtype=np.float32)}
    flat = {("a", "b"): tree["a"]["b"], ("c",): tree["c"]}
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_ocdbt=False)) as ckptr:
        ckptr.save(tmp_path / "orbax", args=ocp.args.PyTreeSave(
            {"a": {"b": jnp.asarray(tree["a"]["b"])}, "c": jnp.asarray(tree["c"])}))
    ours = tmp_path / "ours"
    ours.mkdir()
    stores = open_leaf_writers(ours, {k: v.shape for k, v in flat.items()},
                               {k: v.dtype for k, v in flat.items()}, {("a", "b")}, 1 << 30)
    for layer in range(4):
        stores[("a", "b")][layer].write(flat[("a", "b")][layer]).result()
    stores[("c",)].write(flat[("c",)]).result()
    (ours / "_METADATA").write_text(json.dumps(orbax_tree_metadata(
        {k: v.shape for k, v in flat.items()})))
    theirs = json.loads((tmp_path / "orbax" / "_METADATA").read_text())
    assert json.loads((ours / "_METADATA").read_text()) == theirs
    for name in ("a.b", "c"):
        mine = json.loads((ours / name / ".zarray").read_text())
        orbax_zarray = json.loads((tmp_path / "orbax" / name / ".zarray").read_text())
        assert mine.pop("chunks") == ([1, 6, 8] if name == "a.b" else [5])
        orbax_zarray.pop("chunks")
        assert mine == orbax_zarray
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as ckptr:
        restored = ckptr.restore(ours, args=ocp.args.PyTreeRestore(restore_args={
            "a": {"b": ocp.RestoreArgs(restore_type=np.ndarray)},
            "c": ocp.RestoreArgs(restore_type=np.ndarray)}))
    assert restored["a"]["b"].tobytes() == tree["a"]["b"].tobytes()
    assert restored["c"].tobytes() == tree["c"].tobytes()


SMALL = VLMConfig(  # ~180M parameters: 720 MB in float32; largest tensor 98 MB
    vision=VisionConfig(hidden_size=256, num_hidden_layers=6, num_attention_heads=4,
                        intermediate_size=1024, image_size=28, patch_size=7),
    text=TextConfig(vocab_size=32000, hidden_size=768, intermediate_size=2688,
                    num_hidden_layers=16, num_attention_heads=12, num_key_value_heads=4,
                    head_dim=64),
    image_token_id=10)

CHILD = textwrap.dedent("""
    import json, resource, sys
    from r1v2_jax.convert import convert_to_jax
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, after all imports
    convert_to_jax(sys.argv[1], sys.argv[2], dtype=sys.argv[3])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base": base * 1024, "peak": peak * 1024}))
""")


def test_streaming_peak_memory_is_bounded_by_the_largest_tensor(tmp_path):
    rng = np.random.default_rng(0)
    shapes = leaf_shapes(SMALL)
    params = unflatten({k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()})
    save_hf(SMALL, params, tmp_path / "src", shard_size="200MB")
    del params
    checkpoint_bytes = sum(f.stat().st_size for f in (tmp_path / "src").glob("*.safetensors"))
    largest = 4 * max(int(np.prod(rule.hf_shape)) for rule in rules_for(SMALL, "hf"))
    assert checkpoint_bytes > 7 * largest  # the test only means something if this holds
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "src"),
                             str(tmp_path / "dst"), "bfloat16"], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rss = json.loads(result.stdout.strip().splitlines()[-1])
    increase = rss["peak"] - rss["base"]
    # Measured (2 cores, numpy 2, tensorstore 0.1.x): 720 MB checkpoint, largest tensor 98 MB,
    # increase ~225 MB. Loading everything first would need > the checkpoint size.
    assert increase < checkpoint_bytes / 2, (increase, checkpoint_bytes)
    assert increase < 3.5 * largest + (64 << 20), (increase, largest)
    assert (tmp_path / "dst" / "params" / "_METADATA").is_file()
