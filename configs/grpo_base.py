"""Defaults shared by every GRPO recipe (each field is documented in docs/training.md)."""

import ml_collections


def grpo_recipe():
    c = ml_collections.ConfigDict()
    c.stage = "grpo"
    c.init = ml_collections.ConfigDict(dict(checkpoint=""))  # `r1v2 convert to-jax` output
    c.tokenizer = ""  # folder with the tokenizer files (AutoTokenizer) or a tokenizer.json
    c.data = ml_collections.ConfigDict(dict(
        train="", heldout="", on_invalid="error", max_prompt_tokens=8192, seed=0,
        num_heldout=512,
        max_response_tokens=0,  # preference records: longest response (eos incl.); 0 = any
        system_prompt="",  # "" = no system turn
        # the training set streams (docs/data.md): worker threads reading + decoding
        # records, decoded records buffered ahead (bounds host memory), examples kept for
        # SSB replay / the MPO pool (others are decoded again from their row)
        num_threads=4, prefetch=16, replay_cache=64,
        # decode every training image fully before step 1 (slow for large sets) instead of
        # dropping and counting (data/decode_failures) a corrupt image body when it is read
        check_image_bodies=False,
        tfds_data_dir=""))  # data.* = tfds:NAME/SPLIT reads from here ("" = TFDS default)
    c.rollout = ml_collections.ConfigDict(dict(
        prompts_per_step=64, num_generations=8, max_new_tokens=4096, temperature=1.0, top_p=1.0,
        top_k=0, eval_batch_size=64,
        # 1.0 = off (R1V2's chat uses 1.05); stop strings are cut on the host
        repetition_penalty=1.0, stop_strings=(),
        # continuous batching on this many decode slots (docs/generation.md); 0 = one
        # static batch of prompts_per_step x num_generations rows
        slots=0,
        # every N steps log the rollout-vs-trainer log-prob mismatch of the fresh samples
        # (rollout/logprob_delta_*, rollout/logprob_kl; one extra forward); 0 = never
        logprob_check_every=10))
    c.reward = ml_collections.ConfigDict(dict(
        w_acc=1.0, w_fmt=0.5, w_rm=0.0, rm_standardize=True, rm_clip_tau=1.0, rm_gate="agree",
        # answer checking: hard limits per check and per batch (unfinished checks score 0)
        check_timeout_s=5.0, check_batch_timeout_s=120.0, check_workers=1,
        # the reward model of the w_rm term: the final/ folder of an `rm` run (value head +
        # calibration.json); rm_calibration names another calibration JSON
        rm_checkpoint="", rm_calibration="",
        # how far the RM term may move advantages (rl/rewards.RMAdvantageOptions):
        # rm_scope all | mixed_groups, rm_scale group | batch, rm_share_cap in [0, 1), 0 = off
        rm_scope="all", rm_scale="group", rm_share_cap=0.0))
    # a fixed probe: the first `prompts` held-out prompts sampled num_samples times at
    # `temperature` every `every` steps -> probe/accuracy, probe/pass_at_k; prompts=0: off
    c.probe = ml_collections.ConfigDict(dict(prompts=0, num_samples=4, every=5, temperature=1.0))
    # reward-model serving shapes (0 = from the data)
    c.rm = ml_collections.ConfigDict(dict(score_batch_size=16, max_seq_len=0, max_tiles=0))
    c.ssb = ml_collections.ConfigDict(dict(
        enabled=True, alpha=1.0, floor=1e-4, max_replay_ratio=0.5, max_staleness=4, max_reuse=4,
        capacity=4096, adv_tol=1e-6, off_policy="recompute", is_cap=2.0))
    c.grpo = ml_collections.ConfigDict(dict(
        loss_type="grpo", eps_low=0.2, eps_high=0.2, dual_clip=None, beta=0.0,
        kl_estimator="k3", kl_bias_correction=False, scale="group", std_ddof=1, adv_eps=1e-4,
        # track_kl: log `kl` to the reference even with beta = 0 (no gradient; costs a copy
        # of the trainable part and one more forward per micro-batch)
        track_kl=True,
        num_iterations=1, mini_batch_size=0, micro_batch_size=8, logprob_chunk=512,
        # The loss library by name (docs/losses.md); these defaults are the plain GRPO loss.
        policy_loss="grpo",  # grpo | cispo | gmpo | sapo | clip_cov | kl_cov
        importance_sampling_level="token",  # token | sequence (GSPO) | sequence_token
        sapo_temperature_pos=1.0, sapo_temperature_neg=1.05, cispo_max=5.0,
        clip_cov_ratio=2e-4, clip_cov_lb=1.0, clip_cov_ub=5.0, kl_cov_ratio=2e-4, ppo_kl_coef=1.0,
        entropy_coef=0.0, top_entropy_quantile=1.0,  # 0.2 = the "20% forking tokens" recipe
        advantage_estimator="grpo",  # grpo | dr_grpo | rloo | reinforce_pp
        # behaviour-vs-trainer correction; a level of None turns that part off
        rollout_correction=dict(is_level=None, is_threshold=2.0, is_mode="truncate",
                                rs_level=None, rs_threshold=2.0, rs_threshold_lower=None),
        # DAPO: re-sample until the batch holds prompts_per_step groups with reward variance
        dynamic_sampling=dict(enabled=False, max_rounds=4, metric="reward"),
        # DAPO soft overlong punishment over the last buffer_len tokens of max_new_tokens
        overlong=dict(enabled=False, buffer_len=512, penalty_factor=1.0),
        mask_truncated_completions=False))
    c.optim = ml_collections.ConfigDict(dict(
        lr=1e-6, warmup_steps=10, schedule="constant", total_steps=1000, final_lr_ratio=0.1,
        clip_norm=1.0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, master_fp32=False))
    c.train = ml_collections.ConfigDict(dict(
        steps=1000, trainable="adapter", seed=0, eval_every=50, checkpoint_every=50,
        keep_checkpoints=3, async_checkpoint=True, progress_bar=True,
        # stop with an error after this many consecutive steps whose update was skipped for
        # a non-finite loss or gradient (0 = never)
        max_nonfinite_steps=5))
    c.mesh = ml_collections.ConfigDict(dict(ici=dict(data=1, fsdp=-1, tensor=1), dcn=dict()))
    return c

