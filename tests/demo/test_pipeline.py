"""The demo pipeline end to end on a shrunken recipe: every stage runs in the paper's order
(warm start -> reward model -> MPO -> GRPO with and without SSB, plus the MPO / DPO / SFT
comparison on shared pairs), each writes its metrics, and the summary holds every table.
The figures themselves are the demo's (docs/demo.md); here only the wiring is under test."""

import json
import os

import pytest

from r1v2_jax.demo import stages_mpo
from r1v2_jax.demo.cli import default_config_path
from r1v2_jax.demo.pipeline import (STAGES, build_context, longest_trace_tokens, run_demo,
                                    warmstart_sequences)
from r1v2_jax.train.config_loader import load_config_file


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("demo"))
    cfg = load_config_file(default_config_path() + ":smoke")
    logs = []
    results = run_demo(cfg, out, compare_objectives=True, compare_trainable=True,
                       log=logs.append)
    return out, results, logs


def test_shipped_recipe_traces_fit_the_generation_budget(tmp_path):
    # the warm start imitates these traces; any longer than rollout.max_new_tokens would
    # be cut off whenever the policy samples, and later stages would mostly learn to be
    # short (the demo's tokenizer once spelled every space as its own token: 73 > 48)
    cfg = load_config_file(default_config_path())
    ctx = build_context(cfg, str(tmp_path), log=lambda _: None)
    longest = longest_trace_tokens(warmstart_sequences(ctx))
    assert 30 < longest <= cfg.rollout.max_new_tokens


def test_stages_in_the_papers_order():
    assert STAGES == ("vision", "warmstart", "rm", "mpo", "grpo")


def test_every_stage_runs_and_writes_metrics(demo_run):
    out, results, _ = demo_run
    for stage in ("vision", "warmstart", "rm", "mpo", "grpo", "grpo_no_ssb"):
        assert os.path.exists(os.path.join(out, stage, "metrics.jsonl")), stage


def test_stages_run_through_the_recipes_and_write_final_models(demo_run):
    # the demo's stages are the product's recipes: each leaves a loadable final/ model
    from r1v2_jax.convert import load_jax_checkpoint
    from r1v2_jax.convert.value_head import load_reward_model
    from r1v2_jax.data.tokenizer import load_tokenizer

    out, results, _ = demo_run
    for stage in ("warmstart", "mpo", "grpo", "grpo_no_ssb"):
        config, params = load_jax_checkpoint(os.path.join(out, stage, "final"))
        assert config.image_token_id == load_tokenizer(
            os.path.join(out, stage, "final")).img_context_id
    _, rm_params = load_reward_model(os.path.join(out, "rm", "final"))
    assert "value_head" in rm_params
    cal = json.load(open(os.path.join(out, "rm", "final", "calibration.json")))
    assert cal["mean"] == pytest.approx(results["rm"]["rm_calibration_mean"])
    for stage in ("warmstart", "mpo", "grpo", "grpo_no_ssb"):
        assert 0.0 <= results[stage]["eval_accuracy"] <= 1.0
        assert 0.0 <= results[stage]["eval_hallucination_rate"] <= 1.0
        r = results[stage]  # sampled evaluation: k = 2 responses per held-out prompt
        assert r["eval_num_samples"] == 2
        assert 0.0 <= r["eval_sampled_accuracy"] <= r["eval_pass_at_k"] <= 1.0
    assert 0.0 <= results["rm"]["rm_heldout_pair_accuracy"] <= 1.0
    assert set(results["vision"]) == {"probe_accuracy_kind", "probe_accuracy_color",
                                      "probe_accuracy_size"}
    assert results["rm"]["rm_calibration_std"] > 0.0
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["rm"] == results["rm"]


def test_objectives_train_on_the_same_pairs(demo_run):
    out, results, logs = demo_run
    cmp = results["compare"]
    assert cmp["pairs"] >= 1 and set(cmp) >= {"mpo", "dpo", "sft"}
    for loss in ("mpo", "dpo", "sft"):
        rows = [json.loads(x) for x in open(os.path.join(out, "compare", loss, "metrics.jsonl"))]
        trained = [r for r in rows if "loss" in r]
        assert len(trained) == 2 and all(r["pool_size"] == cmp["pairs"] for r in trained)
    # the objectives differ, so the same pairs give different losses
    first = {loss: json.loads(open(os.path.join(out, "compare", loss, "metrics.jsonl"))
                              .readline())["loss"] for loss in ("mpo", "dpo", "sft")}
    assert len(set(first.values())) == 3
    assert any("[compare]" in line and f"{cmp['pairs']} pairs" in line for line in logs)


def test_traces_longer_than_the_budget_are_flagged(demo_run):
    # the shrunken recipe generates at most 8 tokens, far below the warm-start traces
    _, _, logs = demo_run
    assert any(line.startswith("warning: warm-start traces run up to") and
               "rollout.max_new_tokens=8" in line for line in logs)


def test_summary_holds_every_table(demo_run):
    out, _, _ = demo_run
    text = open(os.path.join(out, "summary.md")).read()
    assert "| sampled accuracy (T>0) | pass@2 |" in text
    for row in ("| warm start (SFT) |", "| MPO |", "| GRPO + SSB |", "| GRPO, no SSB |",
                "Reward model: held-out pair ranking accuracy", "| DPO |", "| SFT |",
                "| none (warm start) |", "Vision stage: probe accuracy on held-out scenes"):
        assert row in text, row
    for table in ("| with SSB |", "| without SSB |", "| 10th percentile |",
                  "| adapter |", "| llm+adapter |", "| shortcut share |",
                  "| hallucination when careful |", "| before GRPO (MPO) |", "| seen gain |"):
        assert table in text, table
    prior = next(line for line in text.splitlines() if line.startswith("| answer prior"))
    assert prior.endswith("| - | - | - | - | - | - |"), prior
    assert 0.0 < float(prior.split("|")[2]) < 1.0
    assert os.path.exists(os.path.join(out, "grpo_curves.png"))


def test_unknown_corruption_is_rejected():
    import numpy as np
    from r1v2_jax.data import synthetic

    data = synthetic.make_dataset(0, 4, heldout_fraction=0.0)
    ex = data.train[0]
    with pytest.raises(ValueError, match="rm.corruptions: unknown corruption 'typo'"):
        stages_mpo.corrupted_trace(ex.scene, ex.question, "typo", np.random.default_rng(0))


def test_table4_arms_reuse_the_main_arm_and_write_their_own(demo_run):
    # --compare-trainable: the main GRPO arm is the llm+adapter row; the other parts run the
    # same recipe into trainable/<arm>/ (which weights move is train/masks' test: two smoke
    # steps from an untrained policy give all-zero advantages)
    out, results, _ = demo_run
    assert list(results["trainable"]) == ["adapter", "llm+adapter"]
    assert results["trainable"]["llm+adapter"] is results["grpo"]
    arm = os.path.join(out, "trainable", "grpo_adapter")
    assert os.path.exists(os.path.join(arm, "metrics.jsonl"))
    assert os.path.isdir(os.path.join(arm, "final"))
    assert results["trainable"]["adapter"]["eval_num_samples"] == 2


def test_behaviour_metrics_split_accuracy_by_first_word():
    from r1v2_jax.demo.pipeline import behaviour_metrics, tallied

    tally = []
    score = tallied(lambda ex, resp: {"accuracy": [1.0, 0.0, 0.0, 1.0],
                                      "hallucinated": [True, False, False, False]}, tally)
    score([None] * 4, ["I see a red circle.", "guess.\n</think>", "guess.", "I see."])
    assert behaviour_metrics(tally, "x") == {
        "x_shortcut_rate": 0.5, "x_shortcut_accuracy": 0.0, "x_careful_accuracy": 1.0,
        "x_hallucination_rate": 0.25, "x_careful_hallucination_rate": 0.5}
    tally[:] = [(False, 1.0, False), (False, 0.0, True), (True, 0.0, False)]
    m = behaviour_metrics(tally, "x")
    assert m["x_shortcut_rate"] == pytest.approx(1 / 3) and m["x_careful_accuracy"] == 0.5
    assert m["x_hallucination_rate"] == pytest.approx(1 / 3)
    assert m["x_careful_hallucination_rate"] == 0.5


def test_seen_prompts_are_the_first_grpo_steps_prompts(demo_run, tmp_path):
    # the seen-vs-unseen probe must evaluate the prompts GRPO actually trained on: the
    # trainer's feed (seeded by train.seed) draws them in the same order
    from r1v2_jax.demo.pipeline import seen_prompts
    from r1v2_jax.train.feed import as_feed

    cfg = load_config_file(default_config_path() + ":smoke")
    cfg.demo.seen_eval_steps = 2
    cfg.train.seed = 5
    ctx = build_context(cfg, str(tmp_path), log=lambda _: None)
    feed = as_feed(ctx.train, 5)
    first_two = feed.take(2) + feed.take(2)  # prompts_per_step = 2 in the smoke recipe
    assert [e.uid for e in seen_prompts(ctx)] == [e.uid for e in first_two]
    assert [e.uid for e in first_two] != [e.uid for e in ctx.train[:4]]  # shuffled, not the head
    cfg.demo.seen_eval_steps = 0
    assert seen_prompts(build_context(cfg, str(tmp_path), log=lambda _: None)) == []
    _, results, _ = demo_run  # the smoke run evaluates them before and after GRPO
    for stage in ("mpo", "grpo", "grpo_no_ssb"):
        assert 0.0 <= results[stage]["seen_sampled_accuracy"] <= 1.0
        assert results[stage]["seen_sampled_num_samples"] == 2
