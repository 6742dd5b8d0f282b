"""Mixed precision: bf16 parameters and compute with fp32 master weights of the trainable
part (as the GRPO trainer sets it up with optim.master_fp32) run a GRPO step that stays
close to the fp32 step from the same initial values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1v2_jax.models import init_params
from r1v2_jax.rl.grpo_step import make_grpo_update, make_score_fn
from r1v2_jax.train.masks import split_params, trainable_parts
from r1v2_jax.train.steps import cast_tree
from tests.sharding import grpo_fixture as fx


@pytest.fixture(scope="module")
def steps():
    config32 = fx.tiny_config()
    config16 = fx.tiny_config(param_dtype="bfloat16", dtype="bfloat16")
    params = jax.jit(lambda r: init_params(config32, r))(jax.random.key(0))
    batch = fx.host_batch(config32, num_micro=2, micro=4, seq=24)
    score = make_score_fn(config32, temperature=1.0, chunk=8)
    batch.old_logps = np.stack([np.asarray(score(params, batch.input_ids[m],
                                                 batch.attention_mask[m], batch.pixel_values[m]))
                                for m in range(2)])
    opt = fx.optimizer()
    trainable, frozen = split_params(params, trainable_parts("llm+adapter"))
    out = {"before": trainable}
    # fp32 reference
    update = make_grpo_update(config32, fx.loss_options(), opt, donate=False)
    out["fp32"] = update(frozen, trainable, trainable, opt.init(trainable), batch)
    # bf16 params/compute; the trainable part kept in fp32 (master weights), cast per step
    frozen16 = cast_tree(frozen, jnp.bfloat16)
    update = make_grpo_update(config16, fx.loss_options(), opt, compute_dtype=jnp.bfloat16,
                              donate=False)
    out["bf16"] = update(frozen16, trainable, trainable, opt.init(trainable), batch)
    out["frozen16"] = frozen16
    return out


def test_bf16_step_runs_with_fp32_master_weights(steps):
    new, state, metrics = steps["bf16"]
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new))  # master stays fp32
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(steps["frozen16"]))
    assert float(metrics["skipped"]) == 0.0 and np.isfinite(float(metrics["loss"]))


def test_bf16_step_is_close_to_fp32(steps):
    loss32, loss16 = float(steps["fp32"][2]["loss"]), float(steps["bf16"][2]["loss"])
    assert abs(loss16 - loss32) <= 0.02 * abs(loss32) + 1e-3, (loss16, loss32)
    before = jax.tree.leaves(steps["before"])
    delta32 = np.concatenate([np.ravel(a - b) for a, b in
                              zip(jax.tree.leaves(steps["fp32"][0]), before)])
    delta16 = np.concatenate([np.ravel(a - b) for a, b in
                              zip(jax.tree.leaves(steps["bf16"][0]), before)])
    cosine = delta16 @ delta32 / np.linalg.norm(delta16) / np.linalg.norm(delta32)
    assert cosine > 0.95, cosine  # the same update direction
    assert abs(np.linalg.norm(delta16) / np.linalg.norm(delta32) - 1) < 0.1
