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
    ids, pixels, mask = make_batch(MICRO, 2, 24, seed=0, tiles=3)  # tiles follow each other
    assert pixels.shape == (6, 28, 28, 3) and (ids[:, 1:13] == 127).all()
    assert (ids[:, 13:] != 127).all() and mask[:, :12].sum() == 0 and mask[:, 12:].min() == 1
    ids, pixels, mask = make_batch(MICRO, 2, 24, seed=0, tiles=0)  # text only
    assert pixels is None and (ids != 127).all() and mask.min() == 1


def test_steps_alternate():
    order = []
    times = interleaved_times({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                              warmup=1, iters=2)
    assert order == ["a", "b"] * 3 and len(times["a"]) == len(times["b"]) == 2


def test_matmul_limit_is_the_best_library():
    m = matmul_flops_per_s(n=64, repeats=1)
    assert m["limit"] == max(m["jax"], m["numpy"], m["torch"]) > 0


def test_report_has_the_matmul_limit_and_the_sweep():
    row = {"name": "t-x", "model": {"hidden": 32, "layers": 1, "heads": 4, "kv_heads": 2},
           "batch": 2, "seq_len": 24, "tiles": 0, "jax_step_s": 1.0, "torch_step_s": 1.2,
           "speedup": 1.2, "jax_flops_per_s": 4e10}
    sweep = {"train": [row], "gen": [], "load_before": (2.5, 0, 0), "load_after": (3.0, 0, 0)}
    text = bench.format_results({"device": "cpu", "quick": False, "sweep": sweep,
                                 "matmul": {"n": 2048, "jax": 4e10, "numpy": 4.5e10,
                                            "limit": 5e10}})
    assert "limit 50.0 GFLOP/s" in text
    assert "1.20x BEHIND  0.80" in text  # target 1.3x; 40 / 50 GFLOP/s of the limit
    assert "load average before 2.50, after 3.00" in text


def test_cli_options():
    from r1v2_jax.cli import build_parser

    argv = ["bench", "--shapes", "t-base,g-new32", "--reps", "1", "--skip", "rollout",
            "--device", "gpu", "--out", "x.json", "--torch-threads", "1"]
    args = build_parser(argv).parse_args(argv)
    assert (args.shapes, args.reps, args.skip, args.device, args.out, args.torch_threads) == \
        ("t-base,g-new32", 1, ["rollout"], "gpu", "x.json", 1)
