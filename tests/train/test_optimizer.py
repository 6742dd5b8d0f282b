"""Learning-rate schedule units: optim.warmup_steps / total_steps count trainer steps,
whatever the number of optimizer updates per step."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from r1v2_jax.train.optimizer import learning_rate_schedule, make_optimizer

LR = 2e-3


def optim_cfg(**kw):
    base = dict(lr=LR, warmup_steps=2, schedule="cosine", total_steps=6, final_lr_ratio=0.1,
                clip_norm=10.0, b1=0.8, b2=0.95, eps=1e-12, weight_decay=0.01, master_fp32=False)
    return ml_collections.ConfigDict({**base, **kw})


# lr of trainer step s by hand: linear warmup 0 -> LR over 2 steps, then cosine over
# 6 - 2 = 4 steps down to 0.1 LR: LR * (0.1 + 0.9 * (1 + cos(pi k / 4)) / 2), k = s - 2.
BY_STEP = [0.0, LR / 2, LR, LR * 0.86819805, LR * 0.55, LR * 0.23180195, LR * 0.1, LR * 0.1]


def test_single_update_schedule_by_hand():
    sched = learning_rate_schedule(optim_cfg())
    np.testing.assert_allclose([float(sched(s)) for s in range(8)], BY_STEP, rtol=1e-6)


def test_every_update_of_a_step_gets_that_steps_lr():
    sched = learning_rate_schedule(optim_cfg(), updates_per_step=4)
    got = [[float(sched(4 * s + u)) for u in range(4)] for s in range(8)]
    np.testing.assert_allclose(got, np.repeat(np.asarray(BY_STEP)[:, None], 4, 1), rtol=1e-6)


def test_optimizer_applies_the_step_schedule():
    """AdamW with a constant gradient: m_hat / sqrt(v_hat) = 1 from the first update, so
    each update is p <- p - lr_t * (1 + weight_decay * p) and exposes lr_t."""
    per = 4
    tx = make_optimizer(optim_cfg(), updates_per_step=per)
    p = {"w": jnp.zeros((), jnp.float32)}
    state = tx.init(p)
    want, got = 0.0, []
    for update in range(7 * per):
        want = want - BY_STEP[update // per] * (1 + 0.01 * want)
        upd, state = tx.update({"w": jnp.float32(0.5)}, state, p)
        p = {"w": p["w"] + upd["w"]}
        got.append((float(p["w"]), want))
    np.testing.assert_allclose(*zip(*got), rtol=1e-5, atol=1e-9)
    # the cosine has not ended early: the last step's updates still move at 0.1 LR
    assert got[-1][0] - got[-2][0] == pytest.approx(-LR * 0.1 * (1 + 0.01 * got[-2][0]),
                                                    rel=1e-4)


def test_constant_schedule_with_warmup_and_bad_values():
    sched = learning_rate_schedule(optim_cfg(schedule="constant", warmup_steps=3),
                                   updates_per_step=2)
    assert [float(sched(c)) for c in range(8)] == pytest.approx(
        [0, 0, LR / 3, LR / 3, 2 * LR / 3, 2 * LR / 3, LR, LR], rel=1e-6)
    with pytest.raises(ValueError, match="updates_per_step"):
        learning_rate_schedule(optim_cfg(), updates_per_step=0)
    with pytest.raises(ValueError, match="optim.schedule"):
        learning_rate_schedule(optim_cfg(schedule="linear"))
    assert float(learning_rate_schedule(optim_cfg(warmup_steps=0))(0)) == pytest.approx(LR)


def test_grpo_trainer_passes_its_updates_per_step(tmp_path, monkeypatch):
    """2 prompts x 4 samples in mini-batches of 2, 3 passes: 3 * 8 / 2 = 12 updates a step."""
    import jax

    from r1v2_jax.demo.pipeline import build_context
    from r1v2_jax.models import init_params
    from r1v2_jax.rl import grpo_trainer as gt
    from r1v2_jax.train.config_loader import apply_overrides, load_config_file
    from tests.rl.test_grpo_resume import OVERRIDES

    seen = []
    real = gt._optimizer.__wrapped__
    monkeypatch.setattr(gt, "_optimizer", lambda items, per: seen.append(per) or real(items, per))
    cfg = apply_overrides(load_config_file("configs/grpo_demo.py"), OVERRIDES + [
        "config.grpo.num_iterations=3", "config.grpo.mini_batch_size=2",
        "config.grpo.micro_batch_size=2"])
    ctx = build_context(cfg, str(tmp_path), log=lambda _: None)
    gt.GRPOTrainer(cfg, ctx.model, jax.jit(init_params, static_argnums=0)(ctx.model,
                                                                          jax.random.key(0)),
                   tokenizer=ctx.tokenizer, prompt=ctx.prompt, train=ctx.train,
                   heldout=ctx.heldout, score=None, workdir=str(tmp_path), log=lambda _: None)
    assert seen and set(seen) == {12}  # not 3 (iterations) nor 4 (mini-batches)
