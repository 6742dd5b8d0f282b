"""One JAX process of the multi-process generation test (or the single-process reference).

    python -m tests.generate.multiprocess_worker --num-processes 2 --process-id I \
        --coordinator 127.0.0.1:PORT --local-devices 2 --out OUT.npz

Generates the sharded worker's work (static and continuous, sampled) on a data=2 x
tensor=2 mesh of 4 devices: spanning 2 processes, or within one. Process 0 writes.
"""

from __future__ import annotations

import argparse

from r1v2_jax.train import distributed


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

    from r1v2_jax.generate import generate
    from r1v2_jax.sharding import make_mesh
    from tests.generate.conftest import pixels, random_params, random_prompts
    from tests.generate.sharded_worker import config

    assert jax.device_count() == 4, jax.devices()
    cfg = config()
    params = random_params(cfg, seed=3)  # host arrays, the same in every process
    mesh = make_mesh(dict(data=2, tensor=2))
    ids, mask = random_prompts([9, 14, 5, 11], seed=21, image_at={1, 3})
    out = {"num_processes": np.asarray(jax.process_count())}
    for name, slots in (("static", None), ("continuous", 4)):
        res = generate(cfg, params, ids, pixels(2, seed=21), attention_mask=mask,
                       max_new_tokens=12, num_samples=2, eos_token_id=(7, 11), seed=5,
                       sample_ids=[10, 11, 12, 13], temperature=0.9, top_p=0.95, top_k=40,
                       mesh=mesh, slots=slots)
        for k in ("tokens", "logprobs", "lengths", "truncated"):
            out[f"{name}/{k}"] = np.asarray(getattr(res, k))
    if jax.process_index() == 0:
        np.savez(args.out, **out)


if __name__ == "__main__":
    main()
