"""One JAX process of the multi-process test (or the single-process reference).

    python -m tests.train.multiprocess_worker --num-processes 2 --process-id I \
        --coordinator 127.0.0.1:PORT --local-devices 2 --out OUT.npz

Builds the tiny model on a data=1, fsdp=2, tensor=2 mesh (sharded init), loads only this
process's rows of the batch and assembles global arrays, then runs 2 GRPO steps and 2 MPO
steps. Process 0 writes the losses and the gathered trainable parameters to OUT.npz.
"""

from __future__ import annotations

import argparse

from r1v2_jax.train import distributed

STEPS = 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--coordinator")
    ap.add_argument("--num-processes", type=int)
    ap.add_argument("--process-id", type=int)
    ap.add_argument("--local-devices", type=int, required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    multi = args.coordinator is not None
    distributed.initialize(args.coordinator, args.num_processes if multi else None,
                           args.process_id if multi else None, args.local_devices)

    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P

    from r1v2_jax.losses import bco_delta_init
    from r1v2_jax.rl.mpo_step import MPOBatch, MPOLossOptions
    from r1v2_jax.rl.grpo_step import sharded_grpo_update
    from r1v2_jax.rl.mpo_step import sharded_mpo_update
    from r1v2_jax.sharding import (DEFAULT_RULES, batch_shardings, make_mesh,
                                   sharded_init_params,
                                   sharded_opt_init, shardings_of)
    from r1v2_jax.train.masks import split_params, trainable_parts
    from r1v2_jax.train.steps import sequence_token_logps
    from tests.sharding import grpo_fixture as fx

    assert jax.device_count() == 4, jax.devices()
    config = fx.tiny_config()
    mesh = make_mesh(dict(data=1, fsdp=2, tensor=2))
    params = sharded_init_params(config, mesh, DEFAULT_RULES, jax.random.key(0))

    def to_global(host_tree):
        """Every process passes only its own rows (axis 1 of [M, b, ...])."""
        shardings = batch_shardings(host_tree, mesh, DEFAULT_RULES, 1)
        local = jax.tree.map(
            lambda x, s: x[:, distributed.local_batch_slice(s, x.shape, axis=1)],
            host_tree, shardings)
        return distributed.global_batch(local, shardings,
                                        jax.tree.map(lambda x: tuple(x.shape), host_tree))

    host = fx.host_batch(config, num_micro=2, micro=4, seq=24)
    batch = to_global(host)

    @jax.jit
    def old_logps(params, batch):
        return jax.lax.map(lambda mb: sequence_token_logps(
            config, params, mb.input_ids, mb.attention_mask, mb.pixel_values, chunk_size=8),
            batch)

    batch.old_logps = old_logps(params, batch)
    trainable, frozen = split_params(params, trainable_parts("llm+adapter"))
    opt = fx.optimizer()
    state, ref, out = sharded_opt_init(opt, trainable, mesh), trainable, {}
    grpo = sharded_grpo_update(config, fx.loss_options(), opt, mesh, DEFAULT_RULES,
                               shardings_of(trainable), shardings_of(state), donate=False)
    losses = []
    for _ in range(STEPS):
        trainable, state, metrics = grpo(frozen, ref, trainable, state, batch)
        losses.append(distributed.process_allgather(metrics["loss"]))
    out["grpo_loss"] = np.stack(losses)
    grpo_trainable = distributed.process_allgather(trainable)

    # MPO on pairs: chosen = the GRPO sequences, rejected = the same prompts with other
    # completion tokens.
    rng = np.random.default_rng(1)
    noise = rng.integers(config.image_token_id + 1, config.text.vocab_size, host.input_ids.shape)
    is_completion = np.pad(host.completion_mask, ((0, 0), (0, 0), (1, 0))) > 0
    rejected = np.where(is_completion, noise, host.input_ids).astype(np.int32)
    pairs = to_global(MPOBatch(host.input_ids, host.attention_mask, host.completion_mask,
                               rejected, host.attention_mask, host.completion_mask,
                               host.pixel_values))
    trainable, frozen = split_params(params, trainable_parts("llm+adapter"))
    state, ref, losses = sharded_opt_init(opt, trainable, mesh), trainable, []
    delta = jax.device_put(bco_delta_init(), NamedSharding(mesh, P()))  # as the step returns it
    mpo = sharded_mpo_update(config, MPOLossOptions(logprob_chunk=8), opt, mesh, DEFAULT_RULES,
                             shardings_of(trainable), shardings_of(state), donate=False)
    for _ in range(STEPS):
        trainable, state, delta, metrics = mpo(frozen, ref, trainable, state, delta, pairs)
        losses.append(distributed.process_allgather(metrics["loss"]))
    out["mpo_loss"] = np.stack(losses)
    out["mpo_delta"] = distributed.process_allgather(delta.mean)
    mpo_trainable = distributed.process_allgather(trainable)

    # Host-consistency helper: every process ends with process 0's decision.
    decision = distributed.broadcast_from_main(np.asarray(jax.process_index() + 7, np.int32))
    out["broadcast"] = np.asarray(decision)
    out["num_processes"] = np.asarray(jax.process_count())
    out["local_rows"] = np.asarray(distributed.local_batch_slice(
        batch.input_ids.sharding, batch.input_ids.shape, axis=1).indices(4)[:2])
    for prefix, tree in (("grpo", grpo_trainable), ("mpo", mpo_trainable)):
        for path, value in jax.tree_util.tree_flatten_with_path(tree)[0]:
            out[prefix + jax.tree_util.keystr(path)] = value
    if distributed.is_main_process():
        np.savez(args.out, **out)
    else:  # every process reports where its rows came from
        np.savez(args.out.replace(".npz", f".p{jax.process_index()}.npz"),
                 local_rows=out["local_rows"], broadcast=out["broadcast"])


if __name__ == "__main__":
    main()
