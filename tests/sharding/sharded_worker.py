"""Runs in a subprocess with 8 simulated CPU devices (XLA_FLAGS set by the test): computes
the same thing on one device and sharded over a (data, fsdp, tensor) mesh, and writes both
to an .npz for the test to compare.

    python -m tests.sharding.sharded_worker OUT.npz

Everything runs in one process because each compilation costs seconds on a small CPU.
"""

from __future__ import annotations

import json
import sys

import jax
import numpy as np

from r1v2_jax.models import VLM, init_params
from r1v2_jax.rl.grpo_step import make_grpo_update, make_score_fn
from r1v2_jax.rl.grpo_step import sharded_grpo_update
from r1v2_jax.sharding import (DEFAULT_RULES, batch_shardings, make_mesh, param_shardings,
                               sharded_init_params, sharded_opt_init,
                               shardings_of)
from r1v2_jax.train.masks import split_params, trainable_parts
from tests.sharding import grpo_fixture as fx

MESH = dict(data=2, fsdp=2, tensor=2)


def _split_count(x: jax.Array) -> int:
    """How many distinct pieces the array is cut into (1 = replicated)."""
    return len({str(s.index) for s in x.addressable_shards})


def _flat(tree, prefix: str) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {prefix + jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}


def _init(config):
    # One compiled program: eager init compiles hundreds of tiny ones.
    return jax.jit(lambda r: init_params(config, r))(jax.random.key(0))


def forward(out: dict, config, mesh, params) -> dict:
    """Single-device forward with `init_params`; sharded forward with the params created
    on their shards by `sharded_init_params` from the same key."""
    batch = fx.host_batch(config, num_micro=1, micro=4, seq=20)
    ids, attn, pixels = batch.input_ids[0], batch.attention_mask[0], batch.pixel_values[0]
    fwd = jax.jit(lambda p, i, a, x: VLM(config).apply({"params": p}, i, x,
                                                        attention_mask=a).logits)
    out["fwd_single"] = np.asarray(fwd(params, ids, attn, pixels))
    fresh = sharded_init_params(config, mesh, DEFAULT_RULES, jax.random.key(0))
    inputs = jax.device_put((ids, attn, pixels), batch_shardings((ids, attn, pixels), mesh,
                                                                 DEFAULT_RULES))
    logits = fwd(fresh, *inputs)
    out["fwd_sharded"] = np.asarray(logits)
    out.update(_flat(fresh, "init_sharded"))
    out.update(_flat(params, "init_single"))
    return {"logits_split": _split_count(logits),
            "param_splits": {jax.tree_util.keystr(k): _split_count(v) for k, v in
                             jax.tree_util.tree_flatten_with_path(fresh)[0]}}


def grpo(out: dict, config, mesh, params, steps: int = 3) -> dict:
    batch = fx.host_batch(config, num_micro=2, micro=4, seq=24)
    score = make_score_fn(config, temperature=1.0, chunk=8)
    old = [score(params, batch.input_ids[m], batch.attention_mask[m], batch.pixel_values[m])
           for m in range(batch.input_ids.shape[0])]
    batch.old_logps = np.stack([np.asarray(o) for o in old])
    opts, opt = fx.loss_options(), fx.optimizer()

    def run(params, batch, init_state, make_update):
        trainable, frozen = split_params(params, trainable_parts("llm+adapter"))
        ref, state, losses = trainable, init_state(trainable), []
        update = make_update(trainable, state)
        for _ in range(steps):
            trainable, state, metrics = update(frozen, ref, trainable, state, batch)
            losses.append(float(metrics["loss"]))
        return trainable, np.asarray(losses)

    trainable, out["single_loss"] = run(
        params, batch, jax.jit(opt.init),
        lambda *_: make_grpo_update(config, opts, opt, donate=False))
    out.update(_flat(trainable, "single"))
    sharded_params = jax.device_put(params, param_shardings(config, mesh, DEFAULT_RULES))
    sharded_batch = jax.device_put(batch, batch_shardings(batch, mesh, DEFAULT_RULES, 1))
    trainable, out["sharded_loss"] = run(
        sharded_params, sharded_batch, lambda t: sharded_opt_init(opt, t, mesh),
        lambda t, s: sharded_grpo_update(config, opts, opt, mesh, DEFAULT_RULES,
                                         shardings_of(t), shardings_of(s), donate=False))
    out.update(_flat(trainable, "sharded"))
    return {"ids_split": _split_count(sharded_batch.input_ids),
            "param_splits": {jax.tree_util.keystr(k): _split_count(v) for k, v in
                             jax.tree_util.tree_flatten_with_path(trainable)[0]}}


if __name__ == "__main__":
    if jax.device_count() != 8:
        sys.exit(f"expected 8 simulated devices, got {jax.device_count()} (XLA_FLAGS unset?)")
    # Blocks of 8 queries: the 20-24-token sequences run the causal-block attention and its
    # hand-written backward on the mesh too.
    config = fx.tiny_config().replace(causal_block=8)
    mesh = make_mesh(MESH)
    params = _init(config)
    arrays: dict = {}
    info = {"forward": forward(arrays, config, mesh, params),
            "grpo": grpo(arrays, config, mesh, params)}
    arrays["info"] = np.asarray(json.dumps(info))
    np.savez(sys.argv[1], **arrays)
