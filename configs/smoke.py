"""`:smoke` for every recipe (big_vision's `get_config(arg)` convention).

`r1v2 train --config configs/grpo_38b.py:smoke` keeps the recipe's logic (stage, loss,
reward terms, trainable part, mesh axes) and shrinks batch, lengths and steps so that a
tiny checkpoint runs it on a CPU in about a minute. Used by tests/recipes for every file
in configs/.
"""


def shrink(c):
    """In place: smallest shapes that still exercise every code path of the recipe."""
    if "model" in c:  # the runtime fields; the checkpoint has the architecture
        c.model.update(dtype="float32", param_dtype="float32", remat_policy="none")
    c.data.update(max_prompt_tokens=2048, num_heldout=2)
    c.rollout.update(prompts_per_step=2, num_generations=2, max_new_tokens=8, eval_batch_size=2)
    c.reward.update(check_workers=1)
    c.rm.update(score_batch_size=2, max_seq_len=0, max_tiles=0)  # 0: from the data
    c.optim.update(warmup_steps=1, total_steps=2, master_fp32=False)
    c.train.update(steps=2, eval_every=2, checkpoint_every=1, keep_checkpoints=2,
                   progress_bar=False)
    if "grpo" in c:
        c.grpo.update(micro_batch_size=2, mini_batch_size=0)
    if "mpo" in c:
        c.mpo.update(prompts_per_round=2, num_samples=2, min_pairs_per_round=1,
                     max_sampling_attempts=1, steps_per_round=2, batch_size=2,
                     micro_batch_size=1, eval_at_start=False)
    if "batch_size" in c.rm:  # a reward-model training recipe
        c.rm.update(batch_size=2, micro_batch_size=1, num_calibration=4)
    if "sft" in c:
        c.sft.update(batch_size=2, micro_batch_size=1, max_seq_len=0)
    return c


def apply_arg(c, arg):
    if arg in (None, ""):
        return c
    if arg == "smoke":
        return shrink(c)
    raise ValueError(f"unknown config argument {arg!r}; known: 'smoke'")
