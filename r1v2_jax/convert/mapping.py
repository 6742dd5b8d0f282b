"""Which Hugging Face tensor becomes which JAX leaf, and how, for both checkpoint layouts.

One `TensorRule` per HF tensor name pattern. A rule maps the PyTorch tensor of one layer
(or the only one) onto one or more JAX leaves (several for layout A's fused `qkv`) and
back, with pure reshapes/transposes so that a round trip is bit-exact:

  copy    x.reshape(leaf)                 (norm scales, biases, [1,1,C] embeddings ...)
  linear  W[out, in] -> W.T.reshape(leaf)  (Dense kernels are [in, out]; heads split out)
  conv    W[C, ch, p, p] -> W.transpose(2, 3, 1, 0)   (HWIO)

Per-layer rules (`stacked`) feed the layer `i` slice of a leaf with a leading layers axis.
The JAX tree is the one in docs/PARAMS.md.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from r1v2_jax.models.config import VLMConfig

LAYOUTS = ("hf", "original")  # B: transformers' InternVL; A: InternVL chat remote code

LeafPath = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TensorRule:
    hf_key: str  # "{i}" stands for the layer index when stacked
    hf_shape: tuple[int, ...]
    leaves: tuple[LeafPath, ...]
    leaf_shapes: tuple[tuple[int, ...], ...]  # per layer (without the layers axis)
    transform: str  # "copy" | "linear" | "conv"
    num_layers: int = 0  # 0: not per-layer

    @property
    def stacked(self) -> bool:
        return self.num_layers > 0

    def instances(self) -> Iterator[tuple[str, int | None]]:
        """(concrete HF key, layer index or None) for every tensor this rule covers."""
        if not self.stacked:
            yield self.hf_key, None
            return
        for i in range(self.num_layers):
            yield self.hf_key.format(i=i), i

    def to_jax(self, x: np.ndarray) -> list[np.ndarray]:
        """One HF tensor -> its JAX piece(s) (C-contiguous)."""
        pieces = np.split(x, len(self.leaves), axis=0) if len(self.leaves) > 1 else [x]
        return [np.ascontiguousarray(_forward(self.transform, p, s))
                for p, s in zip(pieces, self.leaf_shapes)]

    def to_hf(self, pieces: list[np.ndarray]) -> np.ndarray:
        """JAX piece(s) of one layer -> the HF tensor (C-contiguous)."""
        rows = self.hf_shape[0] // len(self.leaves)
        piece_shape = (rows,) + self.hf_shape[1:]
        out = [_backward(self.transform, p, piece_shape) for p in pieces]
        return np.ascontiguousarray(out[0] if len(out) == 1 else np.concatenate(out, axis=0))


def _forward(transform: str, x: np.ndarray, leaf_shape: tuple[int, ...]) -> np.ndarray:
    if transform == "copy":
        return x.reshape(leaf_shape)
    if transform == "linear":
        return x.T.reshape(leaf_shape)
    if transform == "conv":
        return x.transpose(2, 3, 1, 0)
    raise ValueError(f"unknown transform {transform!r}")


def _backward(transform: str, x: np.ndarray, hf_shape: tuple[int, ...]) -> np.ndarray:
    if transform == "copy":
        return x.reshape(hf_shape)
    if transform == "linear":
        return x.reshape(hf_shape[1], hf_shape[0]).T
    if transform == "conv":
        return x.transpose(3, 2, 0, 1)
    raise ValueError(f"unknown transform {transform!r}")


def _path(s: str) -> LeafPath:
    return tuple(s.split("/"))


def rules_for(config: VLMConfig, layout: str) -> list[TensorRule]:
    """All tensor rules of `config` in `layout`, in the order the tensors are written."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return _vision_rules(config, layout) + _adapter_rules(config, layout) + _text_rules(config)


def _vision_rules(config: VLMConfig, layout: str) -> list[TensorRule]:
    vc = config.vision
    c, h, d, f, p = vc.hidden_size, vc.num_attention_heads, vc.head_dim, vc.intermediate_size, \
        vc.patch_size
    n_pos = vc.num_patches_per_side ** 2 + 1
    a = layout == "original"
    emb = "vision_model.embeddings." if a else "vision_tower.embeddings."
    rules = [
        TensorRule(emb + ("class_embedding" if a else "cls_token"), (1, 1, c),
                   (_path("vision/embeddings/class_embedding"),), ((c,),), "copy"),
        TensorRule(emb + ("patch_embedding.weight" if a else "patch_embeddings.projection.weight"),
                   (c, vc.num_channels, p, p), (_path("vision/embeddings/patch_embedding/kernel"),),
                   ((p, p, vc.num_channels, c),), "conv"),
        TensorRule(emb + ("patch_embedding.bias" if a else "patch_embeddings.projection.bias"),
                   (c,), (_path("vision/embeddings/patch_embedding/bias"),), ((c,),), "copy"),
        TensorRule(emb + ("position_embedding" if a else "position_embeddings"), (1, n_pos, c),
                   (_path("vision/embeddings/position_embedding"),), ((n_pos, c),), "copy"),
    ]
    layer = "vision_model.encoder.layers.{i}." if a else "vision_tower.encoder.layer.{i}."
    attn = layer + ("attn." if a else "attention.")
    qkv_leaves = tuple(_path(f"vision/layers/attn/{n}/kernel") for n in "qkv")
    per_layer: list[tuple[str, tuple, tuple, tuple, str]] = []  # (key, hf_shape, leaves, shapes, t)
    if a:
        per_layer.append((attn + "qkv.weight", (3 * c, c), qkv_leaves, ((c, h, d),) * 3, "linear"))
        if vc.qkv_bias:
            per_layer.append((attn + "qkv.bias", (3 * c,),
                              tuple(_path(f"vision/layers/attn/{n}/bias") for n in "qkv"),
                              ((h, d),) * 3, "copy"))
    else:
        for n, leaf in zip("qkv", qkv_leaves):
            per_layer.append((attn + f"{n}_proj.weight", (c, c), (leaf,), ((c, h, d),), "linear"))
            if vc.qkv_bias:
                per_layer.append((attn + f"{n}_proj.bias", (c,),
                                  (_path(f"vision/layers/attn/{n}/bias"),), ((h, d),), "copy"))
    if vc.qk_normalization:
        for n in "qk":
            per_layer.append((attn + f"{n}_norm.weight", (c,),
                              (_path(f"vision/layers/attn/{n}_norm/scale"),), ((c,),), "copy"))
    proj = attn + ("proj." if a else "projection_layer.")
    per_layer += [
        (proj + "weight", (c, c), (_path("vision/layers/attn/proj/kernel"),), ((h, d, c),),
         "linear"),
        (proj + "bias", (c,), (_path("vision/layers/attn/proj/bias"),), ((c,),), "copy"),
        (layer + "mlp.fc1.weight", (f, c), (_path("vision/layers/mlp/fc1/kernel"),), ((c, f),),
         "linear"),
        (layer + "mlp.fc1.bias", (f,), (_path("vision/layers/mlp/fc1/bias"),), ((f,),), "copy"),
        (layer + "mlp.fc2.weight", (c, f), (_path("vision/layers/mlp/fc2/kernel"),), ((f, c),),
         "linear"),
        (layer + "mlp.fc2.bias", (c,), (_path("vision/layers/mlp/fc2/bias"),), ((c,),), "copy"),
    ]
    for ours, theirs in (("norm1", "layernorm_before"), ("norm2", "layernorm_after")):
        name = layer + (ours if a else theirs)
        per_layer.append((name + ".weight", (c,), (_path(f"vision/layers/{ours}/scale"),),
                          ((c,),), "copy"))
        if vc.norm_type == "layer_norm":
            per_layer.append((name + ".bias", (c,), (_path(f"vision/layers/{ours}/bias"),),
                              ((c,),), "copy"))
    for k in (1, 2):
        per_layer.append((layer + (f"ls{k}" if a else f"lambda_{k}"), (c,),
                          (_path(f"vision/layers/ls{k}"),), ((c,),), "copy"))
    rules += [TensorRule(key, shape, leaves, shapes, t, vc.num_hidden_layers)
              for key, shape, leaves, shapes, t in per_layer]
    return rules


def _adapter_rules(config: VLMConfig, layout: str) -> list[TensorRule]:
    inv = round(1 / config.downsample_ratio)
    c4, e = config.vision.hidden_size * inv * inv, config.text.hidden_size
    names = (("mlp1.0", "mlp1.1", "mlp1.3") if layout == "original" else
             ("multi_modal_projector.layer_norm", "multi_modal_projector.linear_1",
              "multi_modal_projector.linear_2"))
    norm, fc1, fc2 = names
    return [
        TensorRule(norm + ".weight", (c4,), (_path("adapter/norm/scale"),), ((c4,),), "copy"),
        TensorRule(norm + ".bias", (c4,), (_path("adapter/norm/bias"),), ((c4,),), "copy"),
        TensorRule(fc1 + ".weight", (e, c4), (_path("adapter/fc1/kernel"),), ((c4, e),), "linear"),
        TensorRule(fc1 + ".bias", (e,), (_path("adapter/fc1/bias"),), ((e,),), "copy"),
        TensorRule(fc2 + ".weight", (e, e), (_path("adapter/fc2/kernel"),), ((e, e),), "linear"),
        TensorRule(fc2 + ".bias", (e,), (_path("adapter/fc2/bias"),), ((e,),), "copy"),
    ]


def _text_rules(config: VLMConfig) -> list[TensorRule]:
    tc = config.text
    e, v, i, d = tc.hidden_size, tc.vocab_size, tc.intermediate_size, tc.head_dim
    hq, hkv = tc.num_attention_heads, tc.num_key_value_heads
    layer = "language_model.model.layers.{i}."
    rules = [TensorRule("language_model.model.embed_tokens.weight", (v, e),
                        (_path("text/embed_tokens/embedding"),), ((v, e),), "copy")]
    per_layer = [
        ("input_layernorm.weight", (e,), "input_norm/scale", (e,), "copy"),
        ("self_attn.q_proj.weight", (hq * d, e), "attn/q_proj/kernel", (e, hq, d), "linear"),
        ("self_attn.q_proj.bias", (hq * d,), "attn/q_proj/bias", (hq, d), "copy"),
        ("self_attn.k_proj.weight", (hkv * d, e), "attn/k_proj/kernel", (e, hkv, d), "linear"),
        ("self_attn.k_proj.bias", (hkv * d,), "attn/k_proj/bias", (hkv, d), "copy"),
        ("self_attn.v_proj.weight", (hkv * d, e), "attn/v_proj/kernel", (e, hkv, d), "linear"),
        ("self_attn.v_proj.bias", (hkv * d,), "attn/v_proj/bias", (hkv, d), "copy"),
        ("self_attn.o_proj.weight", (e, hq * d), "attn/o_proj/kernel", (hq, d, e), "linear"),
        ("post_attention_layernorm.weight", (e,), "post_attention_norm/scale", (e,), "copy"),
        ("mlp.gate_proj.weight", (i, e), "mlp/gate_proj/kernel", (e, i), "linear"),
        ("mlp.up_proj.weight", (i, e), "mlp/up_proj/kernel", (e, i), "linear"),
        ("mlp.down_proj.weight", (e, i), "mlp/down_proj/kernel", (i, e), "linear"),
    ]
    rules += [TensorRule(layer + key, shape, (_path("text/layers/" + leaf),), (leaf_shape,), t,
                         tc.num_hidden_layers)
              for key, shape, leaf, leaf_shape, t in per_layer]
    rules.append(TensorRule("language_model.model.norm.weight", (e,), (_path("text/norm/scale"),),
                            ((e,),), "copy"))
    if not tc.tie_word_embeddings:
        rules.append(TensorRule("language_model.lm_head.weight", (v, e),
                                (_path("text/lm_head/kernel"),), ((e, v),), "linear"))
    return rules


def leaf_shapes(config: VLMConfig) -> dict[LeafPath, tuple[int, ...]]:
    """Every JAX leaf of `config` with its full shape (layers axis included)."""
    out: dict[LeafPath, tuple[int, ...]] = {}
    for rule in rules_for(config, "hf"):
        for leaf, shape in zip(rule.leaves, rule.leaf_shapes):
            out[leaf] = ((rule.num_layers,) + shape) if rule.stacked else shape
    return out


def flatten(tree: dict, prefix: LeafPath = ()) -> dict[LeafPath, object]:
    """Nested dict -> {path tuple: leaf}."""
    out: dict[LeafPath, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


def unflatten(flat: dict[LeafPath, object]) -> dict:
    """{path tuple: leaf} -> nested dict."""
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree
