"""The shape sweep's machinery (not its speed): point selection, every peer timed on the
same model and batch (first losses agree across JAX, PyTorch and Tunix), generation points
with and without an image, and the tables' verdicts against the targets."""

import pytest

pytest.importorskip("transformers")

from r1v2_jax.generate.bench import BenchModel  # noqa: E402
from r1v2_jax.tools import bench_sweep  # noqa: E402
from r1v2_jax.tools.bench_shapes import (GEN_SHAPES, TRAIN_SHAPES, GenShape,  # noqa: E402
                                          TrainShape, select)
from r1v2_jax.tools.bench_train import TrainBenchModel  # noqa: E402

MICRO = TrainBenchModel(vision_hidden=32, vision_layers=1, vision_heads=2, vision_intermediate=64,
                        image_size=28, patch_size=7, hidden=32, layers=2, heads=4, kv_heads=2,
                        intermediate=64, vocab=128)
GEN = BenchModel(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vision_hidden_size=16)


def test_select_points():
    train, gen = select("t-seq4096,gen,t-seq4096")
    assert [s.name for s in train] == ["t-seq4096"] and gen == GEN_SHAPES
    assert select(None) == (TRAIN_SHAPES, GEN_SHAPES)
    assert select("train") == (TRAIN_SHAPES, ())
    with pytest.raises(ValueError, match="unknown point 't-nope'"):
        select("t-base,t-nope")


def test_the_sweep_covers_the_axes():
    seqs = {s.seq_len for s in TRAIN_SHAPES}
    assert min(seqs) == 256 and max(seqs) == 4096
    assert {s.tiles for s in TRAIN_SHAPES} >= {0, 1, 3}
    assert {s.model.kv_heads for s in TRAIN_SHAPES} >= {1, 2, 8}  # GQA ratio 8, 4, 1
    news = {s.new_tokens for s in GEN_SHAPES}
    assert min(news) == 32 and max(news) == 512 and {s.tiles for s in GEN_SHAPES} == {0, 1}


def test_text_train_point_times_all_three_peers_on_one_model():
    pytest.importorskip("tunix")
    r = bench_sweep.train_point(TrainShape("t-micro", MICRO, batch=2, seq_len=16), warmup=0,
                                reps=1)
    # Same weights, same batch, same targets on every side: the first losses agree.
    assert r["first_loss_jax"] == pytest.approx(r["first_loss_torch"], rel=1e-5)
    assert r["first_loss_jax"] == pytest.approx(r["first_loss_tunix"], rel=1e-5)
    assert r["tunix_speedup"] == pytest.approx(r["tunix_step_s"] / r["jax_step_s"])
    assert len(r["jax_times"]) == len(r["tunix_times"]) == len(r["torch_times"]) == 1


def test_image_train_point_has_no_tunix():
    r = bench_sweep.train_point(TrainShape("t-micro-img", MICRO, batch=2, seq_len=16, tiles=2),
                                warmup=0, reps=1)
    assert r["first_loss_jax"] == pytest.approx(r["first_loss_torch"], rel=1e-5)
    assert "tunix_step_s" not in r and r["tiles"] == 2


@pytest.mark.parametrize("tiles", [0, 1])
def test_gen_point(tiles):
    if tiles == 0:
        pytest.importorskip("tunix")
    r = bench_sweep.gen_point(GenShape("g-micro", GEN, batch=2, new_tokens=4, prompt_len=6,
                                       tiles=tiles), warmup=0, reps=1)
    assert r["prompt_len"] == 6 + 4 * tiles  # a 28 px tile = 4 image tokens
    assert r["speedup"] == pytest.approx(r["jax_tokens_per_s"] / r["torch_tokens_per_s"])
    assert ("tunix_speedup" in r) == (tiles == 0)


def test_tables_state_each_peer_and_verdict():
    train = {"name": "t-a", "model": {"hidden": 32, "layers": 2, "heads": 4, "kv_heads": 2},
             "batch": 2, "seq_len": 16, "tiles": 0, "jax_step_s": 0.1, "torch_step_s": 0.125,
             "speedup": 1.25, "tunix_step_s": 0.12, "tunix_speedup": 1.2,
             "jax_flops_per_s": 2e9}
    gen = {"name": "g-a", "model": {"hidden_size": 32, "num_hidden_layers": 2}, "batch": 2,
           "prompt_len": 6, "new_tokens": 4, "tiles": 0, "jax_tokens_per_s": 300.0,
           "torch_tokens_per_s": 100.0, "speedup": 3.0, "tunix_tokens_per_s": 310.0,
           "tunix_speedup": 300 / 310}
    text = bench_sweep.format_sweep({"train": [train], "gen": [gen], "load_before": (1, 0, 0),
                                     "load_after": (2, 0, 0)}, matmul_limit=1e10)
    torch_part, tunix_part = text.split("vs Tunix")
    assert "1.25x BEHIND  0.20" in torch_part and "3.00x ok" in torch_part
    assert "1.20x ok" in tunix_part and "0.97x BEHIND" in tunix_part
