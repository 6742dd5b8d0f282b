"""MPO and reward-model fields (docs/mpo.md documents each one).

  mpo_fields()          c.mpo defaults: the paper's / InternVL's MPO values
  rm_fields()           c.rm defaults: reward-model serving (+ training for the demo)
  mpo_recipe()          a whole MPO recipe (GRPO recipe's data/rollout/reward/optim/train/mesh
                        sections + mpo + rm), specialised by configs/mpo_38b.py
  mpo_demo_defaults()   ConfigDict(rm=..., mpo=...) for configs/grpo_demo.py
"""

import ml_collections

from grpo_base import grpo_recipe


def mpo_fields():
    return ml_collections.ConfigDict(dict(
        # loss: "mpo" | "dpo" | "sft" (Table 3 comparison); TRL DPOConfig names
        loss="mpo", beta=0.1, weights=(0.8, 0.2, 1.0), label_smoothing=0.0, logprob_chunk=512,
        # pairs: n samples per prompt, best vs worst, margin on a 0-100 scale >= threshold
        threshold=15.0, report_thresholds=(7.0, 10.0, 15.0), score_scale=100.0,
        # the chosen side must answer correctly (docs/mpo.md, a CHOICE: not in the paper)
        require_correct_chosen=True,
        score_range=(),  # () = the hybrid reward's own range (needs reward.rm_clip_tau)
        prompts_per_round=64, num_samples=8, temperature=1.0, top_p=1.0, top_k=0,
        min_pairs_per_round=64, max_sampling_attempts=4,
        # training: optimizer steps per round of sampling, pairs per step
        steps_per_round=8, batch_size=64, micro_batch_size=8,
        eval_at_start=True,
        # per-stage overrides of the recipe's optim / train / reward sections
        optim=dict(), train=dict(), reward=dict(),
    ))


def rm_fields():
    return ml_collections.ConfigDict(dict(
        # scorer shapes (0 = from the data); the reward model itself is named by
        # reward.rm_checkpoint / reward.rm_calibration
        score_batch_size=16, max_seq_len=0, max_tiles=12,
        head_init_std=0.02,
        # Bradley-Terry training (rl/rm_trainer.py)
        trainable="llm+adapter", steps=1000, batch_size=64, micro_batch_size=8, lr=1e-5,
        warmup=30, schedule="cosine", seed=0, center_rewards_coefficient=0.0,
        num_calibration=512,  # train pairs whose scores set the calibration (mean, std)
    ))


def mpo_recipe():
    c = grpo_recipe()
    c.stage = "mpo"
    del c["ssb"], c["grpo"]
    c.data.preferences = ""  # optional JSONL preference records, added to every round's pool
    c.mpo = mpo_fields()
    c.rm = rm_fields()
    # InternVL MPO scripts: lr 5e-6, weight decay 0.05, warmup 3%, cosine
    c.optim.update(lr=5e-6, weight_decay=0.05, schedule="cosine")
    return c


def mpo_demo_defaults():
    """Demo sizes: about 1 minute for the reward model and 1.5 for MPO on 2 CPU cores."""
    rm = rm_fields()
    rm.update(score_batch_size=64, max_tiles=1, trainable="llm+adapter", steps=40, batch_size=16,
              micro_batch_size=16, lr=1e-3, warmup=4, schedule="cosine")
    rm.num_train_pairs = 640  # synthetic pairs: correct trace vs corrupted trace
    rm.num_calibration = 128
    rm.corruptions = ("answer", "hallucination", "both")
    mpo = mpo_fields()
    mpo.update(prompts_per_round=16, num_samples=8, min_pairs_per_round=8,
               max_sampling_attempts=2, steps_per_round=4, batch_size=8, micro_batch_size=8,
               eval_at_start=False,
               optim=dict(lr=1e-4, warmup_steps=0, schedule="constant", total_steps=12),
               train=dict(steps=12, trainable="llm+adapter", eval_every=0, checkpoint_every=4,
                          keep_checkpoints=1, progress_bar=False),
               reward=dict(w_rm=0.5, rm_gate="agree"))
    return ml_collections.ConfigDict(dict(rm=rm, mpo=mpo))

