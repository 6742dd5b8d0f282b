"""The demo's vision stage: pretraining the ViT and the mlp1 adapter to see the shapes.

R1V2 starts from InternViT-6B, pretrained on its own; the demo's encoder starts random, and
next-token SFT alone never teaches it to tell the shapes apart (docs/demo.md, "Diagnosis").
This stage stands in for that pretraining: a linear probe reads every grid cell's shape,
colour and size (or "empty") from the adapter's image tokens, and the probe's
cross-entropy trains the encoder and the adapter. The probe is thrown away afterwards;
the language model is untouched. Scenes are drawn fresh from their own seed; any whose
content belongs to the held-out split is skipped, so the encoder never sees it.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from r1v2_jax.data import synthetic
from r1v2_jax.data.image import TilingConfig, preprocess_images
from r1v2_jax.models.vlm import VLM
from r1v2_jax.train.metrics import MetricsWriter
from r1v2_jax.train.optimizer import make_optimizer

ATTRIBUTES = (("kind", synthetic.KINDS), ("color", tuple(synthetic.COLORS)),
              ("size", synthetic.SIZES))  # each label is 1 + index; 0 = empty cell


def cell_labels(scene: synthetic.Scene) -> np.ndarray:
    """int32 [grid*grid, 3]: per cell (row-major) kind, colour and size, 0 for empty."""
    labels = np.zeros((scene.grid * scene.grid, len(ATTRIBUTES)), np.int32)
    for s in scene.shapes:
        row, col = scene.cell_of(s)
        labels[row * scene.grid + col] = [values.index(getattr(s, name)) + 1
                                          for name, values in ATTRIBUTES]
    return labels


def probe_scenes(n: int, seed: int, config: synthetic.SyntheticConfig, *,
                 heldout_fraction: float, heldout: bool = False) -> list[synthetic.Scene]:
    """`n` scenes whose content lies in the train split (or, with heldout=True, in the
    held-out split)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        scene = synthetic.sample_scene(rng, config)
        if synthetic.is_heldout(scene, heldout_fraction) == heldout:
            out.append(scene)
    return out


def _arrays(scenes, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    tiling = TilingConfig(image_size=image_size, min_num=1, max_num=1, use_thumbnail=False)
    pixels = np.concatenate([preprocess_images([synthetic.render(s)], tiling).pixel_values
                             for s in scenes])
    return pixels, np.stack([cell_labels(s) for s in scenes])


def probe_loss(model_config, params, head, pixels, labels):
    """Mean over cells and attributes of the probe's cross-entropy; also the accuracy per
    attribute. head: {"kernel": [tokens*E, cells*classes], "bias": [cells*classes]}."""
    feats = VLM(model_config).apply({"params": params}, pixels, method=VLM.image_features)
    logits = feats.reshape(feats.shape[0], -1).astype(jnp.float32) @ head["kernel"] + head["bias"]
    logits = logits.reshape(labels.shape[0], labels.shape[1], -1)
    loss, accuracy, start = 0.0, [], 0
    for j, (_, values) in enumerate(ATTRIBUTES):
        part = logits[..., start:start + len(values) + 1]
        start += len(values) + 1
        loss += optax.softmax_cross_entropy_with_integer_labels(part, labels[..., j]).mean()
        accuracy.append((part.argmax(-1) == labels[..., j]).mean())
    return loss / len(ATTRIBUTES), jnp.stack(accuracy)


def run_vision_stage(ctx, params, stage_dir: str):
    """Probe-pretrains params["vision"] and params["adapter"]; returns (params, metrics)."""
    v = ctx.cfg.vision
    size = ctx.model.vision.image_size
    scene_cfg = synthetic.SyntheticConfig(image_size=size)
    fraction = float(ctx.cfg.demo.heldout_fraction)
    batch, steps = int(v.batch_size), int(v.steps)
    t0 = time.time()
    # rendered a batch at a time: all of them at once would hold ~0.7 GB of float pixels
    scenes = probe_scenes(steps * batch, int(v.seed), scene_cfg, heldout_fraction=fraction)
    eval_pixels, eval_labels = _arrays(probe_scenes(int(v.eval_scenes), int(v.seed) + 1, scene_cfg,
                                                    heldout_fraction=fraction, heldout=True), size)
    classes = sum(len(values) + 1 for _, values in ATTRIBUTES)
    width = ctx.model.num_image_tokens * ctx.model.text.hidden_size
    cells = scene_cfg.grid * scene_cfg.grid
    head = {"kernel": jnp.zeros((width, cells * classes), jnp.float32),
            "bias": jnp.zeros((cells * classes,), jnp.float32)}
    trainable = {"vision": params["vision"], "adapter": params["adapter"], "head": head}
    optim = ml_collections.ConfigDict(dict(ctx.cfg.optim))
    optim.update(lr=float(v.lr), warmup_steps=int(v.warmup), total_steps=steps, schedule="cosine")
    optimizer = make_optimizer(optim)
    opt_state = optimizer.init(trainable)

    def loss_fn(t, x, y):
        return probe_loss(ctx.model, {**params, "vision": t["vision"], "adapter": t["adapter"]},
                          t["head"], x, y)

    @jax.jit
    def update(t, state, x, y):
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(t, x, y)
        updates, state = optimizer.update(grads, state, t)
        return optax.apply_updates(t, updates), state, loss, acc

    writer = MetricsWriter(stage_dir)
    for step in range(1, steps + 1):
        pixels, labels = _arrays(scenes[(step - 1) * batch:step * batch], size)
        trainable, opt_state, loss, _ = update(trainable, opt_state, pixels, labels)
        if step % 50 == 0 or step == steps:
            writer.write({"step": step, "stage": "vision", "loss": float(loss),
                          "seconds": time.time() - t0})
    _, acc = jax.jit(loss_fn)(trainable, eval_pixels, eval_labels)
    metrics = {f"probe_accuracy_{name}": float(a) for (name, _), a in zip(ATTRIBUTES, acc)}
    writer.write({"step": steps, "stage": "vision", **metrics})
    writer.close()
    ctx.log(f"[vision] {steps} steps in {time.time() - t0:.0f}s: held-out probe accuracy "
            + ", ".join(f"{name} {metrics['probe_accuracy_' + name]:.3f}"
                        for name, _ in ATTRIBUTES))
    return {**params, "vision": trainable["vision"], "adapter": trainable["adapter"]}, metrics
