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


def test_rollout_bench_compares_engines_on_the_same_work():
    from r1v2_jax.tools.bench_rollout import RolloutWorkload, bench_rollout, format_rollout

    model = BenchModel(vocab_size=256, hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
    w = RolloutWorkload(prompts=3, num_samples=2, prompt_text_tokens=8, max_new_tokens=24,
                        num_stop_ids=12, slots=2, hf_prompts=1)
    r = bench_rollout(w, model)
    assert r["same_tokens"]  # continuous batching gave the static engine's samples
    s, c = r["static"], r["continuous"]
    assert s["tokens"] == c["tokens"] >= 6 and r["hf"]["tokens"] >= 2
    # KV: 6 rows vs 2 slots of (16 prompt + 32 new) slots, plus 3 prompts' 16 slots;
    # 2 layers x K and V x 1 head x 32 dims x 4 bytes per slot
    per_slot = 2 * 2 * 1 * 32 * 4
    assert s["kv_bytes"] == (6 * 48 + 3 * 16) * per_slot
    assert c["kv_bytes"] == (2 * 48 + 3 * 16) * per_slot
    assert 0 < s["occupancy"] <= 1 and 0 < c["occupancy"] <= 1
    assert r["speedup_vs_static"] == pytest.approx(c["tokens_per_s"] / s["tokens_per_s"])
    assert "target >= 2x" in format_rollout(r)
