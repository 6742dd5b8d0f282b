"""The demo recipe (`r1v2 demo`) on the synthetic shapes task with the `demo` model: warm
start by SFT, the reward model, MPO, then GRPO with the hybrid reward and the Selective
Sample Buffer (docs/demo.md)."""

import ml_collections

import demo as demo_model
from grpo_base import grpo_recipe
from mpo_base import mpo_demo_defaults


def get_config(arg=None):
    c = grpo_recipe()
    c.model = demo_model.model()
    c.demo = ml_collections.ConfigDict(dict(
        data_seed=0, num_examples=2400, heldout_fraction=0.1, num_heldout=256,
        # --compare-trainable (the paper's Table 4): GRPO + SSB with each part trainable
        trainable_parts=("adapter", "llm+adapter", "vit+adapter"),
        compare_prompts=64,  # --compare-objectives: prompts sampled once for the shared pairs
        # accuracy of k samples at a temperature + pass@k after each stage, on the first
        # `prompts` held-out prompts (num_samples=0: off)
        sampled_eval=dict(prompts=256, num_samples=4, temperature=1.0),
        # the seen-vs-unseen probe: sampled accuracy (sampled_eval's k and temperature) on
        # the prompts of GRPO's first `seen_eval_steps` steps, before and after GRPO
        seen_eval_steps=1,
        # a control, not R1V2's recipe: the MPO stage's scores minus this times the known
        # hallucination flag of each sample, so its pairs prefer truthful descriptions
        # (docs/demo.md, "Why MPO does not lower hallucination here"); 0 = off
        mpo_hallucination_penalty=0.0))
    mpo_stages = mpo_demo_defaults()
    c.rm, c.mpo = mpo_stages.rm, mpo_stages.mpo
    # the stand-in for a pretrained vision encoder: a per-cell probe trains ViT + adapter
    c.vision = ml_collections.ConfigDict(dict(
        steps=300, batch_size=64, lr=3e-3, warmup=20, seed=1000, eval_scenes=256))
    c.warmstart = ml_collections.ConfigDict(dict(
        steps=600, batch_size=32, micro_batch_size=32, lr=3e-3, warmup=10, trainable="all",
        seed=0,
        # a distilled reasoning model's traces mix behaviours of different quality: this
        # share guesses at once ("guess."), right with probability shortcut_correct; the
        # rest describe and count (data/synthetic.TraceMix). Above one half, so the greedy
        # warm start guesses; a guess mostly wrong, so the reward tells the behaviours
        # apart; 600 steps, so the careful 40% is learned (docs/demo.md, "A warm start with
        # two behaviours": at 0.6 / 0.5 and 250 steps the careful path was no better).
        # embellish_rate: the share of careful traces that name an invented shape; 0.3
        # did not let MPO lower hallucination (docs/demo.md, "Why MPO does not lower
        # hallucination here"), so it stays off
        traces=dict(shortcut_rate=0.6, shortcut_correct=0.1, seed=0, embellish_rate=0.0)))
    c.rm.update(steps=150)
    c.rollout.update(prompts_per_step=48, num_generations=8, max_new_tokens=64, temperature=1.0,
                     eval_batch_size=64)
    # the hybrid reward: rule accuracy + 0.5 format + 0.5 calibrated reward model ("agree")
    c.reward.update(w_rm=0.5)
    # a one-bit reward needs large update batches at a low lr: 16 prompts per step at 3e-4
    # drifted instead of learning (docs/demo.md, "Diagnosis")
    c.grpo.update(micro_batch_size=64, mini_batch_size=0, beta=0.0, eps_high=0.28)
    c.optim.update(lr=2e-4, warmup_steps=3, schedule="cosine", total_steps=20)
    c.train.update(steps=20, trainable="llm+adapter", eval_every=10, checkpoint_every=10,
                   keep_checkpoints=2, progress_bar=True)
    if arg == "smoke":
        smoke(c)
    elif arg not in (None, ""):
        raise ValueError(f"unknown config argument {arg!r}; known: 'smoke'")
    return c


def smoke(c):
    """Every demo stage in seconds (tests/demo): a few examples, two steps each."""
    c.demo.update(num_examples=160, num_heldout=8, compare_prompts=4,
                  trainable_parts=("adapter", "llm+adapter"))
    c.demo.sampled_eval.num_samples = 2
    c.vision.update(steps=2, batch_size=4, eval_scenes=4)
    c.warmstart.update(steps=2, batch_size=8, micro_batch_size=8)
    c.rm.update(steps=2, num_train_pairs=16, num_calibration=8, batch_size=8, micro_batch_size=8)
    # an untrained policy answers nothing right: let the (ungated) reward model's scores
    # separate the samples so that pairs exist
    c.mpo.reward.update(rm_gate="none", w_rm=1.0)
    c.mpo.update(threshold=0.01, prompts_per_round=4, num_samples=2, min_pairs_per_round=1,
                 steps_per_round=2, batch_size=2, micro_batch_size=2,
                 require_correct_chosen=False)
    c.mpo.train.update(steps=2, checkpoint_every=0)
    c.rollout.update(prompts_per_step=2, num_generations=2, max_new_tokens=8, eval_batch_size=8)
    c.grpo.micro_batch_size = 4
    c.train.update(steps=2, eval_every=0, checkpoint_every=0, progress_bar=False)
