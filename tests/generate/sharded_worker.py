"""Runs in a subprocess with 8 simulated CPU devices (XLA_FLAGS set by the test): generates
the same work on one device and on meshes (tensor=4; data=4 x tensor=2), static and
continuous, and writes everything to an .npz for the test to compare.

    python -m tests.generate.sharded_worker OUT.npz
"""

from __future__ import annotations

import json
import sys

import jax
import numpy as np

from r1v2_jax.generate import engine, generate
from r1v2_jax.models import TextConfig, VisionConfig, VLMConfig
from r1v2_jax.sharding import DEFAULT_RULES, make_mesh
from tests.generate.conftest import IMAGE_ID, pixels, random_params, random_prompts

MESHES = {"tensor4": dict(tensor=4), "data4_tensor2": dict(data=4, tensor=2)}


def config() -> VLMConfig:
    """4 KV heads and 8 query heads so that tensor=2 and tensor=4 both split them."""
    return VLMConfig(
        vision=VisionConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, image_size=28, patch_size=7),
        text=TextConfig(vocab_size=128, hidden_size=64, intermediate_size=128,
                        num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=4,
                        head_dim=8, rope_theta=10000.0),
        image_token_id=IMAGE_ID)


def runs(cfg, params, mesh) -> dict[str, dict[str, np.ndarray]]:
    ids, mask = random_prompts([9, 14, 5, 11], seed=21, image_at={1, 3})
    pix = pixels(2, seed=21)
    kw = dict(attention_mask=mask, max_new_tokens=12, num_samples=2, eos_token_id=(7, 11),
              seed=5, sample_ids=[10, 11, 12, 13], mesh=mesh)
    out = {}
    for name, extra in (("greedy", dict(temperature=0.0)),
                        ("sampled", dict(temperature=0.9, top_p=0.95, top_k=40)),
                        ("continuous", dict(temperature=0.9, top_p=0.95, top_k=40, slots=4))):
        res = generate(cfg, params, ids, pix, **kw, **extra)
        out[name] = {k: np.asarray(getattr(res, k))
                     for k in ("tokens", "logprobs", "lengths", "truncated")}
        out[name]["rows_split"] = np.asarray(len({str(s.index) for s in
                                                  res.tokens.addressable_shards}))
    return out


def trainer_rollout(mesh) -> dict:
    """One GRPO step of the demo's tiny setup on `mesh`: its rollout must run the
    engine's programs on that mesh."""
    import tempfile

    from r1v2_jax.demo.pipeline import build_context
    from r1v2_jax.models import init_params
    from r1v2_jax.rl.grpo_trainer import GRPOTrainer
    from r1v2_jax.train.config_loader import apply_overrides, load_config_file

    overrides = [
        "config.model.vision.image_size=28", "config.model.vision.hidden_size=32",
        "config.model.vision.intermediate_size=64", "config.model.text.hidden_size=32",
        "config.model.text.intermediate_size=64", "config.model.text.num_hidden_layers=2",
        "config.model.text.num_attention_heads=4", "config.model.text.head_dim=8",
        "config.demo.num_examples=20", "config.demo.num_heldout=4",
        "config.rollout.prompts_per_step=2", "config.rollout.num_generations=4",
        "config.rollout.max_new_tokens=8", "config.grpo.micro_batch_size=4",
        "config.train.steps=1", "config.train.eval_every=0", "config.train.checkpoint_every=0",
        "config.train.progress_bar=False", "config.ssb.enabled=False"]
    cfg = apply_overrides(load_config_file("configs/grpo_demo.py"), overrides)
    with tempfile.TemporaryDirectory() as workdir:
        ctx = build_context(cfg, workdir, log=lambda _: None)
        params = jax.jit(lambda r: init_params(ctx.model, r))(jax.random.key(0))
        trainer = GRPOTrainer(cfg, ctx.model, params, tokenizer=ctx.tokenizer, prompt=ctx.prompt,
                              train=ctx.train, heldout=ctx.heldout, score=ctx.score,
                              workdir=workdir, log=lambda _: None, mesh=mesh,
                              rules=DEFAULT_RULES)
        engine.clear_program_cache()
        record = trainer.train_step()
    plans = [k for k in engine._PROGRAMS if isinstance(k, engine.Plan)]
    return {"plans": len(plans), "on_mesh": all(p.mesh is mesh for p in plans),
            "response_len_mean": record["response_len_mean"]}


if __name__ == "__main__":
    if jax.device_count() != 8:
        sys.exit(f"expected 8 simulated devices, got {jax.device_count()} (XLA_FLAGS unset?)")
    cfg = config()
    params = jax.device_put(random_params(cfg, seed=3))
    arrays, info = {}, {}
    for prefix, mesh in [("single", None)] + [(n, make_mesh(m, devices=jax.devices()[:
                                                int(np.prod(list(m.values())))]))
                                              for n, m in MESHES.items()]:
        for run, values in runs(cfg, params, mesh).items():
            for k, v in values.items():
                arrays[f"{prefix}/{run}/{k}"] = v
        if mesh is not None:
            # the prefill program's cache layout, read back from its compiled form
            plan_keys = [k for k in engine._PROGRAMS if isinstance(k, engine.Plan)
                         and k.mesh is mesh]
            plan = plan_keys[0]
            from r1v2_jax.sharding import batch_sharding, param_shardings
            p = jax.device_put(params, param_shardings(cfg, mesh, DEFAULT_RULES))
            b, width = plan.batch, plan.prompt_len
            args = (p, jax.ShapeDtypeStruct((b, width), np.int32,
                                            sharding=batch_sharding(mesh, DEFAULT_RULES, (b, width))),
                    jax.ShapeDtypeStruct((b,), np.int32,
                                         sharding=batch_sharding(mesh, DEFAULT_RULES, (b,))),
                    jax.ShapeDtypeStruct((plan.num_tiles, 28, 28, 3), np.float32,
                                         sharding=batch_sharding(mesh, DEFAULT_RULES,
                                                                 (plan.num_tiles, 28, 28, 3))))
            compiled = engine.prefill_program(plan).lower(*args).compile()
            caches = compiled.output_shardings[0]
            info[prefix] = {"cache_spec": [str(a) for a in caches[0][0].spec],
                            "qproj_split": len({str(s.index) for s in p["text"]["layers"]["attn"]
                                                ["q_proj"]["kernel"].addressable_shards})}
    info["trainer"] = trainer_rollout(make_mesh(dict(data=2, fsdp=2, tensor=2)))
    arrays["info"] = np.asarray(json.dumps(info))
    np.savez(sys.argv[1], **arrays)
