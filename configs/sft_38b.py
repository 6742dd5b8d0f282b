"""SFT (warm / cold start) for Skywork-R1V2-38B on SFT records (question + response with
its `<think>` trace; docs/data.md).

R1V2 itself skips SFT (the paper trains MPO and GRPO from the distilled reasoning model);
this stage is for a cold start on new domains or formats. Every value is a CHOICE
following InternVL's SFT scripts: lr 1e-5, cosine, warmup 3%, weight decay 0.05, the LLM
and adapter trained, the ViT frozen.

    r1v2 train --config configs/sft_38b.py --workdir gs://bucket/r1v2/sft \\
        --config.init.checkpoint=gs://bucket/ckpt/r1v2-38b-jax \\
        --config.data.train=gs://bucket/data/sft/train.jsonl \\
        --config.data.heldout=gs://bucket/data/grpo/heldout.jsonl
"""

import ml_collections

import r1v2_38b
from grpo_base import grpo_recipe
from smoke import apply_arg


def sft_recipe():
    c = grpo_recipe()
    c.stage = "sft"
    del c["ssb"], c["grpo"]
    c.reward.update(w_fmt=0.0, w_rm=0.0)  # held-out evaluation: the rule judge
    # sequences: batch_size per optimizer step in micro-batches; max_seq_len 0 = from data
    c.sft = ml_collections.ConfigDict(dict(batch_size=128, micro_batch_size=4, max_seq_len=0))
    c.optim.update(lr=1e-5, warmup_steps=30, schedule="cosine", total_steps=1000,
                   weight_decay=0.05, clip_norm=1.0)
    c.train.update(steps=1000, trainable="llm+adapter", eval_every=200, checkpoint_every=100,
                   keep_checkpoints=2)
    return c


def get_config(arg=None):
    c = sft_recipe()
    c.model = r1v2_38b.model()
    c.data.update(max_prompt_tokens=8192, num_heldout=256)
    c.rollout.update(max_new_tokens=8192, eval_batch_size=64)
    c.sft.update(max_seq_len=16384)
    c.optim.update(master_fp32=True)
    c.mesh.ici = dict(data=1, fsdp=-1, tensor=4)
    return apply_arg(c, arg)
