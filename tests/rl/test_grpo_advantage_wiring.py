"""Each GRPO sample's advantage comes from its own prompt's group and its own reward.

One `GRPOTrainer.train_step` with a fake scorer whose rewards depend on the prompt (a large
per-prompt offset) and on the response text (a hash); the Selective Sample Buffer then holds
every fresh sample with non-zero advantage, with its prompt uid, response ids, reward and
advantage.  Expected advantages are recomputed here in NumPy (float64) from the rewards the
scorer handed out, grouped by prompt uid: a reward attached to another response, a group
boundary in the wrong place or an advantage attached to the wrong sample all fail.
"""

import time
import zlib

import jax
import numpy as np
import pytest

from r1v2_jax.demo.pipeline import build_context
from r1v2_jax.models import init_params
from r1v2_jax.rl.grpo_trainer import GRPOTrainer
from r1v2_jax.train.config_loader import apply_overrides, load_config_file
from tests.rl.test_grpo_resume import OVERRIDES

# non-default (grpo, 1, 1e-4): an ignored option shows. RLOO: c_i = G/(G-1) (r_i - mean),
# scaled by the group std as GRPO (scale="group")
ESTIMATOR, STD_DDOF, ADV_EPS = "rloo", 0, 0.05


def _reward(uid, response):
    return 10.0 * (uid % 7) + (zlib.crc32(response.encode()) % 1000) / 250.0


def test_each_sample_gets_its_own_groups_advantage(tmp_path):
    cfg = apply_overrides(load_config_file("configs/grpo_demo.py"), OVERRIDES + [
        "config.rollout.prompts_per_step=3", "config.rollout.num_generations=4",
        "config.grpo.micro_batch_size=4", "config.grpo.num_iterations=1",
        f"config.grpo.advantage_estimator={ESTIMATOR}", "config.grpo.scale=group",
        f"config.grpo.std_ddof={STD_DDOF}", f"config.grpo.adv_eps={ADV_EPS}",
        "config.train.eval_every=0", "config.train.checkpoint_every=0",
        "config.ssb.enabled=True", "config.ssb.adv_tol=1e-3"])
    ctx = build_context(cfg, str(tmp_path), log=lambda _: None)
    given = []  # (uid, response, reward) in the order the scorer saw them

    def score(examples, responses):
        r = np.asarray([_reward(e.uid, t) for e, t in zip(examples, responses)], np.float32)
        given.extend((e.uid, t, float(x)) for e, t, x in zip(examples, responses, r))
        n = len(r)
        return {"reward": r, "accuracy": np.zeros(n), "format": np.zeros(n), "rm": np.zeros(n),
                "hallucinated": np.zeros(n, bool)}

    trainer = GRPOTrainer(cfg, ctx.model, init_params(ctx.model, jax.random.key(0)),
                          tokenizer=ctx.tokenizer, prompt=ctx.prompt, train=ctx.train,
                          heldout=ctx.heldout, score=score, workdir=str(tmp_path),
                          log=lambda _: None)
    t0 = time.time()
    record = trainer.train_step()
    wall = time.time() - t0
    # the rollout's share of the step: a duration inside the step, not a time stamp
    assert 0 < record["rollout/seconds"] <= wall and 0 < record["rollout/time_share"] <= 1

    by_uid = {}
    for uid, text, r in given:
        by_uid.setdefault(uid, {})[text] = r
    assert len(given) == 12 and len(by_uid) == 3 and all(len(v) >= 3 for v in by_uid.values())
    entries = trainer.ssb.state.entries
    assert len(entries) >= 10  # every sample with a distinct reward is effective
    eos = ctx.tokenizer.eos_id
    for e in entries:
        uid = int(e.sample.payload.prompt_ref)
        ids = np.asarray(e.sample.payload.response_ids)
        text = ctx.prompt.think_prefix + ctx.tokenizer.decode(
            ids[:-1] if len(ids) and ids[-1] == eos else ids, skip_special_tokens=False)
        assert e.sample.reward == np.float32(by_uid[uid][text]), (uid, text)  # its own reward
        group = np.asarray([r for u, _, r in given if u == uid], np.float64)
        g = len(group)
        expected = (g / (g - 1) * (e.sample.reward - group.mean())
                    / (group.std(ddof=STD_DDOF) + ADV_EPS))
        np.testing.assert_allclose(e.sample.advantage, expected, rtol=1e-4, atol=1e-5)

    # an unknown estimator name fails naming the config key (the rollout is already compiled)
    trainer.cfg.grpo.advantage_estimator = "bogus"
    with pytest.raises(ValueError, match=r"^config\.grpo\.advantage_estimator: unknown "
                                         r"advantage estimator 'bogus'"):
        trainer.train_step()
