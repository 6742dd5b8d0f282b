"""The generation benchmark runs end to end on a very small model and reports consistent
figures (no timing is asserted)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from r1v2_jax.generate.bench import BenchModel, bench_generation  # noqa: E402


def test_bench_generation_reports_both_engines_and_the_shared_prefill():
    model = BenchModel(vocab_size=256, hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
    out = bench_generation(batch=4, new_tokens=8, prompt_len=8, num_samples=2, repeats=1,
                           model=model)
    assert out["jax_tokens_per_s"] > 0 and out["torch_tokens_per_s"] > 0
    assert out["speedup"] == pytest.approx(out["jax_tokens_per_s"] / out["torch_tokens_per_s"])
    assert out["meets_target"] == (out["speedup"] >= 3.0)
    share = out["shared_prefill"]
    assert (share["prompts"], share["prefill_rows_shared"], share["prefill_rows_unshared"]) \
        == (2, 2, 4)
    assert share["same_tokens"]
    with pytest.raises(ValueError, match="multiple of num_samples"):
        bench_generation(batch=3, num_samples=2, model=model)
