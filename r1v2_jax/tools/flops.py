"""Analytic FLOPs and bytes of the VLM's steps, from the config alone.

A matmul [n, k] @ [k, m] costs 2nkm FLOPs; the backward pass costs the same again for the
input gradient and again for the weight gradient. Counted exactly as the model computes:

  vision   patch embedding on tiles*P patches; every layer on tiles*(P+1) tokens (layers past
           `select_layer` run too); attention scores 4*tiles*(P+1)^2*C per layer;
  adapter  fc1, fc2 on tiles*P*r^2 tokens;
  text     every layer on B*T tokens, attention scores 4*B*N*Hq*D per layer, N the (query,
           key) pairs computed: T^2 for the plain XLA path (masked entries too), fewer with
           causal blocks (`attention_pairs`), the LM head on B*(T-1) tokens (log-probs of the
           next token).

Elementwise work (norms, softmax, RoPE, activations) is left out, as usual for MFU.

Backward: trainable parts get input + weight gradients (2x forward); frozen parts that lie
between a trainable part and the loss get input gradients only (1x); the vision tower in
front of a trainable adapter gets none. "model" FLOPs count each forward once (the MFU
convention); "hardware" FLOPs add what remat recomputes (the forward of every layer stack
that is differentiated, when remat_policy != "none").
"""

from __future__ import annotations

import dataclasses

from r1v2_jax.models.config import VLMConfig


@dataclasses.dataclass(frozen=True)
class ForwardFlops:
    vision: float
    adapter: float
    text_layers: float
    lm_head: float

    @property
    def total(self) -> float:
        return self.vision + self.adapter + self.text_layers + self.lm_head


def text_layer_matmul_params(config: VLMConfig) -> int:
    tc = config.text
    e, d = tc.hidden_size, tc.head_dim
    attn = e * d * (2 * tc.num_attention_heads + 2 * tc.num_key_value_heads)  # q, o, k, v
    return attn + 3 * e * tc.intermediate_size  # gate, up, down


def vision_layer_matmul_params(config: VLMConfig) -> int:
    vc = config.vision
    return 4 * vc.hidden_size ** 2 + 2 * vc.hidden_size * vc.intermediate_size


def attention_pairs(config: VLMConfig, seq_len: int) -> int:
    """(query, key) pairs the text attention computes per head and sequence. The XLA path
    with causal blocks (T > `causal_block`): block [i, e) of queries against keys [0, e).
    Otherwise the full T x T matrix (the flash kernels skip masked tiles, but their tiling
    is theirs: counted in full, as the usual MFU convention does)."""
    block = config.causal_block
    if config.attention_impl != "xla" or not block or seq_len <= block:
        return seq_len * seq_len
    return sum((min(i + block, seq_len) - i) * min(i + block, seq_len)
               for i in range(0, seq_len, block))


def forward_flops(config: VLMConfig, batch: int, seq_len: int, tiles: int) -> ForwardFlops:
    """One forward of `batch` sequences of `seq_len` tokens holding `tiles` image tiles in all."""
    vc, tc = config.vision, config.text
    patches = vc.num_patches_per_side ** 2
    c = vc.hidden_size
    vision_tokens = tiles * (patches + 1)
    vision = (2 * tiles * patches * vc.patch_size ** 2 * vc.num_channels * c
              + vc.num_hidden_layers * (2 * vision_tokens * vision_layer_matmul_params(config)
                                        + 4 * tiles * (patches + 1) ** 2 * c))
    adapter_in = c * round(1 / config.downsample_ratio) ** 2
    e = tc.hidden_size
    adapter = 2 * tiles * config.num_image_tokens * (adapter_in * e + e * e)
    tokens = batch * seq_len
    text_layers = tc.num_hidden_layers * (
        2 * tokens * text_layer_matmul_params(config)
        + 4 * batch * attention_pairs(config, seq_len) * tc.num_attention_heads * tc.head_dim)
    lm_head = 2 * batch * (seq_len - 1) * e * tc.vocab_size
    return ForwardFlops(float(vision), float(adapter), float(text_layers), float(lm_head))


@dataclasses.dataclass(frozen=True)
class StepFlops:
    model: float  # forward + backward (+ reference forward), each forward counted once
    hardware: float  # model + remat recomputation


def train_step_flops(config: VLMConfig, batch: int, seq_len: int, tiles: int,
                     trainable: tuple[str, ...], *, reference_forward: bool = False) -> StepFlops:
    """FLOPs of one policy-gradient step on one micro-batch (loss on the LM's log-probs).

    trainable: top-level parts that get gradients ("vision", "adapter", "text").
    reference_forward: add one forward of the reference policy (KL term, beta > 0).
    """
    f = forward_flops(config, batch, seq_len, tiles)
    text_factor = 2 if "text" in trainable else 1  # the gradient always flows through the LM
    backward = text_factor * (f.text_layers + f.lm_head)
    if "adapter" in trainable or "vision" in trainable:
        backward += 2 * f.adapter
    if "vision" in trainable:
        backward += 2 * f.vision
    model = f.total + backward + (f.total if reference_forward else 0.0)
    remat = 0.0
    if config.remat_policy != "none":
        remat = f.text_layers + (f.vision if "vision" in trainable else 0.0)
    return StepFlops(model=model, hardware=model + remat)


@dataclasses.dataclass(frozen=True)
class DecodeCost:
    flops: float
    weight_bytes: float  # LM weights read once per step
    cache_bytes: float  # KV cache read once per step (the XLA path reads every slot)

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.cache_bytes


def decode_step_cost(config: VLMConfig, batch: int, cache_len: int,
                     param_bytes: int = 2, cache_bytes: int = 2) -> DecodeCost:
    """One token for each of `batch` rows against a KV cache of `cache_len` slots."""
    tc = config.text
    layer = text_layer_matmul_params(config)
    head = tc.hidden_size * tc.vocab_size
    attention = 4 * batch * cache_len * tc.num_attention_heads * tc.head_dim
    flops = 2 * batch * (tc.num_hidden_layers * layer + head) + tc.num_hidden_layers * attention
    weights = (tc.num_hidden_layers * layer + head) * param_bytes
    cache = (2 * tc.num_hidden_layers * batch * cache_len * tc.num_key_value_heads * tc.head_dim
             * cache_bytes)
    return DecodeCost(float(flops), float(weights), float(cache))
