"""The reward model r_theta for Skywork-R1V2-38B: the policy backbone + a scalar value
head, Bradley-Terry on preference records (docs/data.md), then calibrated (mean/std of its
scores on `rm.num_calibration` training pairs). Its WORKDIR/final/ is what MPO and GRPO name
with `--config.reward.rm_checkpoint`.

The paper uses Skywork-VL Reward and gives no training values: every value here is a
CHOICE (TRL RewardTrainer defaults scaled to the model: lr 1e-5 -> 2e-6 for 38B, cosine,
one epoch of ~64k pairs).

    r1v2 train --config configs/rm_38b.py --workdir gs://bucket/r1v2/rm \\
        --config.init.checkpoint=gs://bucket/ckpt/r1v2-38b-jax \\
        --config.data.train=gs://bucket/data/rm/train.jsonl \\
        --config.data.heldout=gs://bucket/data/rm/heldout.jsonl
"""

import r1v2_38b
from grpo_base import grpo_recipe
from mpo_base import rm_fields
from smoke import apply_arg


def rm_recipe():
    c = grpo_recipe()
    c.stage = "rm"
    del c["ssb"], c["grpo"]
    c.rm = rm_fields()
    # the stage's steps, trainable part and learning rate are train.* / optim.* here
    for demo_only in ("trainable", "steps", "lr", "warmup", "schedule"):
        del c.rm[demo_only]
    c.rm.update(batch_size=64, micro_batch_size=4, num_calibration=512)
    c.optim.update(lr=2e-6, warmup_steps=30, schedule="cosine", total_steps=1000,
                   weight_decay=0.0, clip_norm=1.0)
    c.train.update(steps=1000, trainable="llm+adapter", eval_every=200, checkpoint_every=100,
                   keep_checkpoints=2)
    return c


def get_config(arg=None):
    c = rm_recipe()
    c.model = r1v2_38b.model()
    c.data.update(max_prompt_tokens=8192, num_heldout=512, max_response_tokens=8192)
    c.optim.update(master_fp32=True)
    c.mesh.ici = dict(data=1, fsdp=-1, tensor=4)
    return apply_arg(c, arg)
