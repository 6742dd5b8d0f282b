"""GRPO with the hybrid reward and the SSB for the real Skywork-R1V2-38B.

Starts from the MPO stage's output (or a converted release checkpoint); trains the adapter
only (the paper's best setting, Table 4). The paper gives few hyperparameters: values
marked CHOICE are this project's (docs/training.md, docs/rewards_and_ssb.md).

    r1v2 train --config configs/grpo_38b.py --workdir gs://bucket/r1v2/grpo \\
        --config.init.checkpoint=gs://bucket/r1v2/mpo/final \\
        --config.reward.rm_checkpoint=gs://bucket/r1v2/rm/final \\
        --config.data.train=gs://bucket/data/grpo/train.jsonl \\
        --config.data.heldout=gs://bucket/data/grpo/heldout.jsonl
"""

from grpo_base import grpo_recipe
import r1v2_38b
from smoke import apply_arg


def get_config(arg=None):
    c = grpo_recipe()
    c.model = r1v2_38b.model()
    c.rollout.update(prompts_per_step=64, num_generations=8, max_new_tokens=8192,
                     temperature=1.0, top_p=1.0, eval_batch_size=64)
    c.grpo.update(loss_type="grpo", eps_low=0.2, eps_high=0.28, beta=0.0,  # CHOICE (DAPO clip-higher)
                  micro_batch_size=8, num_iterations=1)
    c.reward.update(w_acc=1.0, w_fmt=0.5, w_rm=0.5, rm_clip_tau=1.0, rm_gate="agree")  # CHOICE
    c.optim.update(lr=1e-6, warmup_steps=10, schedule="constant", master_fp32=True)
    c.train.update(steps=1000, trainable="adapter", eval_every=50, checkpoint_every=25)
    c.rm.update(score_batch_size=16, max_seq_len=16384, max_tiles=12)
    c.mesh.ici = dict(data=1, fsdp=-1, tensor=4)
    return apply_arg(c, arg)
