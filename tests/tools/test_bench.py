"""The benchmark machinery (not the speed): both sides of the train-step benchmark train
the same model on the same batch, the FLOP rate uses the analytic count, the steps
alternate, and the report states which targets are met."""

import pytest

from r1v2_jax.tools import bench
from r1v2_jax.tools.bench_train import (TrainBenchModel, bench_train_step, interleaved_times,
                                        make_batch)
from r1v2_jax.tools.matmul_peak import matmul_flops_per_s

MICRO = TrainBenchModel(vision_hidden=32, vision_layers=1, vision_heads=2, vision_intermediate=64,
                        image_size=28, patch_size=7, hidden=32, layers=1, heads=4, kv_heads=2,
                        intermediate=64, vocab=128)


def test_train_bench_compares_the_same_model_and_batch():
    r = bench_train_step(spec=MICRO, batch=2, seq_len=24, warmup=0, iters=2)
    # Same weights, same batch, same targets: the first losses agree to float precision.
    assert r["first_loss_jax"] == pytest.approx(r["first_loss_torch"], rel=1e-5)
    assert r["first_loss_jax"] == pytest.approx(4.85, abs=0.5)  # ~ log(128): random init
    assert len(r["jax_times"]) == len(r["torch_times"]) == 2
    assert r["speedup"] == pytest.approx(r["torch_step_s"] / r["jax_step_s"])
    assert r["jax_flops_per_s"] == pytest.approx(r["model_flops"] / r["jax_step_s"])


def test_batch_layout():
    ids, pixels, mask = make_batch(MICRO, 2, 24, seed=0)
    assert ids.shape == (2, 24) and pixels.shape == (2, 28, 28, 3) and mask.shape == (2, 23)
    assert (ids[:, 1:5] == 127).all() and (ids[:, 5:] != 127).all()  # 4 image tokens
    assert mask[:, :4].sum() == 0 and mask[:, 4:].min() == 1  # no loss on placeholders
    with pytest.raises(ValueError, match="must exceed the 4 image tokens"):
        make_batch(MICRO, 2, 5, seed=0)


def test_steps_alternate():
    order = []
    times = interleaved_times({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                              warmup=1, iters=2)
    assert order == ["a", "b"] * 3 and len(times["a"]) == len(times["b"]) == 2


def test_matmul_limit_is_the_best_library():
    m = matmul_flops_per_s(n=64, repeats=1)
    assert m["limit"] == max(m["jax"], m["numpy"], m["torch"]) > 0


def test_report_states_targets():
    train = {"params": 1e6, "batch": 8, "seq_len": 512, "threads": 2, "jax_step_s": 1.0,
             "torch_step_s": 1.2, "speedup": 1.2, "first_loss_jax": 9.0, "first_loss_torch": 9.0,
             "model_flops": 4e10, "jax_flops_per_s": 4e10, "torch_flops_per_s": 3.3e10,
             "matmul_fraction": 0.85}
    text = bench.format_results({"device": "cpu", "quick": False, "train": train,
                                 "matmul": {"n": 2048, "jax": 4e10, "numpy": 4.5e10,
                                            "limit": 4.7e10}})
    assert "1.20x (target >= 1.3x: NOT met)" in text
    assert "0.85 of the matmul limit (target >= 0.8: met)" in text
