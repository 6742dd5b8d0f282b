"""The demo recipe (`r1v2 demo`) on the synthetic shapes task with the `demo` model: warm
start by SFT, the reward model, MPO, then GRPO with the hybrid reward and the Selective
Sample Buffer (docs/demo.md)."""

import ml_collections

import demo as demo_model
from grpo_base import grpo_recipe
from mpo_base import mpo_demo_defaults


def get_config():
    c = grpo_recipe()
    c.model = demo_model.model()
    c.demo = ml_collections.ConfigDict(dict(
        data_seed=0, num_examples=2400, heldout_fraction=0.1, num_heldout=256,
        compare_prompts=64,  # --compare-objectives: prompts sampled once for the shared pairs
        # accuracy of k samples at a temperature + pass@k after each stage, on the first
        # `prompts` held-out prompts (num_samples=0: off)
        sampled_eval=dict(prompts=256, num_samples=4, temperature=1.0)))
    mpo_stages = mpo_demo_defaults()
    c.rm, c.mpo = mpo_stages.rm, mpo_stages.mpo
    c.warmstart = ml_collections.ConfigDict(dict(
        steps=100, batch_size=32, micro_batch_size=32, lr=3e-3, warmup=10, trainable="all",
        seed=0))
    c.rm.update(steps=200)  # ~1 min; held-out ranking >= 0.9 needs about five epochs
    c.rollout.update(prompts_per_step=16, num_generations=8, max_new_tokens=48, temperature=1.0,
                     eval_batch_size=64)
    # the hybrid reward: rule accuracy + 0.5 format + 0.5 calibrated reward model ("agree")
    c.reward.update(w_rm=0.5)
    c.grpo.update(micro_batch_size=32, mini_batch_size=0, beta=0.0, eps_high=0.28)
    c.optim.update(lr=3e-4, warmup_steps=5, schedule="cosine", total_steps=80)
    c.train.update(steps=80, trainable="llm+adapter", eval_every=20, checkpoint_every=40,
                   keep_checkpoints=2, progress_bar=True)
    return c
