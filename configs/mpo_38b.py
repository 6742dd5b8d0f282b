"""MPO (R1V2 stage 2) for Skywork-R1V2-38B: iterated rounds of sampling with the policy,
hybrid-reward scoring (rules + format + the reward model), best-vs-worst pairs at the
paper's threshold 15, and the MPO loss; the adapter trains (the paper's best setting).

Required before a run: init.checkpoint (the `sft` stage's final/ or a converted release),
data.train, data.heldout (prompt records), reward.rm_checkpoint (an `rm` run's final/,
which holds its calibration.json); optional data.preferences (offline pairs). The
tokenizer defaults to the checkpoint's own copy. The paper gives no MPO hyperparameters:
optimizer values follow InternVL's MPO scripts (lr 5e-6, weight decay 0.05, cosine, warmup
3%, 8K-token sequences); round and batch sizes are CHOICEs (docs/mpo.md): 256 prompts x 8
samples per round, 4 steps of 64 pairs per round.
"""

import r1v2_38b
from mpo_base import mpo_recipe
from smoke import apply_arg


def get_config(arg=None):
    c = mpo_recipe()
    c.model = r1v2_38b.model()
    c.rollout.update(max_new_tokens=8192, eval_batch_size=64)
    c.data.update(max_prompt_tokens=8192, num_heldout=512)
    # r = w_acc * r_rule + w_rm * r_theta~ + w_fmt * r_format; r_theta~ standardised on the
    # calibration set, clipped to [-1, 1], kept only where it agrees with the rule
    c.reward.update(w_acc=1.0, w_rm=1.0, w_fmt=0.5, rm_standardize=True, rm_clip_tau=1.0,
                    rm_gate="agree", check_timeout_s=5.0, check_workers=8)
    c.rm.update(score_batch_size=16, max_seq_len=16384, max_tiles=12)
    c.mpo.update(loss="mpo", beta=0.1, weights=(0.8, 0.2, 1.0), threshold=15.0,
                 report_thresholds=(7.0, 10.0, 15.0), prompts_per_round=256, num_samples=8,
                 temperature=1.0, min_pairs_per_round=128, max_sampling_attempts=4,
                 steps_per_round=4, batch_size=64, micro_batch_size=4, logprob_chunk=1024,
                 eval_at_start=True)
    c.optim.update(lr=5e-6, warmup_steps=12, schedule="cosine", total_steps=400,
                   weight_decay=0.05, clip_norm=1.0, master_fp32=True)
    c.train.update(steps=400, trainable="adapter", eval_every=50, checkpoint_every=25,
                   keep_checkpoints=3, async_checkpoint=True)
    c.mesh.update(ici=dict(data=1, fsdp=-1, tensor=1))
    return apply_arg(c, arg)
