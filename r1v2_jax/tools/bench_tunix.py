"""Tunix (google-tunix 0.1.7, the `bench` extra) as a peer: its NNX Qwen2 train step and its
vanilla sampler, run on our converted weights.

`tunix_qwen2(config, params)` copies the LM part of our parameters into Tunix's `Qwen2`
(its layers are a Python list, its projections einsums), so both sides compute the same
function (parity: tests/tools/test_bench_tunix.py). The train step is what Tunix's
`PeftTrainer` runs by default: its `_default_loss_fn` (full fp32 logits, log-softmax,
one-hot) under `jax.value_and_grad`, then AdamW. The sampler is `tunix.generate.Sampler`
with a whitespace "tokenizer" over token ids, no stop token (every row generates exactly
`new_tokens`).
"""

from __future__ import annotations

import functools

import numpy as np

from r1v2_jax.models.config import VLMConfig
from r1v2_jax.tools.bench_accel import donated_step


def tunix_config(config: VLMConfig):
    from tunix.models.qwen2 import model as tq

    tc = config.text
    return tq.ModelConfig(
        num_layers=tc.num_hidden_layers, vocab_size=tc.vocab_size, embed_dim=tc.hidden_size,
        hidden_dim=tc.intermediate_size, num_heads=tc.num_attention_heads, head_dim=tc.head_dim,
        num_kv_heads=tc.num_key_value_heads, rope_theta=int(tc.rope_theta),
        norm_eps=tc.rms_norm_eps, use_tied_embedding=tc.tie_word_embeddings,
        dtype=config.jnp_dtype, param_dtype=config.jnp_param_dtype)


def tunix_qwen2(config: VLMConfig, params):
    """Tunix's Qwen2 holding the LM weights of `params` (our VLM parameter tree)."""
    import jax.numpy as jnp
    from flax import nnx
    from tunix.models.qwen2 import model as tq

    model = tq.Qwen2(tunix_config(config), rngs=nnx.Rngs(0))
    text = params["text"]
    stack = text["layers"]
    model.embedder.input_embedding.value = jnp.asarray(text["embed_tokens"]["embedding"])
    if not config.text.tie_word_embeddings:
        model.lm_head.w.value = jnp.asarray(text["lm_head"]["kernel"])
    model.final_norm.w.value = jnp.asarray(text["norm"]["scale"])
    for i, layer in enumerate(model.layers):
        at = lambda *path: jnp.asarray(functools.reduce(lambda d, k: d[k], path, stack)[i])
        layer.input_layernorm.w.value = at("input_norm", "scale")
        layer.post_attention_layernorm.w.value = at("post_attention_norm", "scale")
        for name in ("q", "k", "v"):
            getattr(layer.attn, f"{name}_proj").w.value = at("attn", f"{name}_proj", "kernel")
            bias = at("attn", f"{name}_proj", "bias")
            getattr(layer.attn, f"{name}_bias").value = bias.reshape(-1)  # [H, D] -> [H*D]
        layer.attn.o_proj.w.value = at("attn", "o_proj", "kernel")
        for name in ("gate", "up", "down"):
            getattr(layer.mlp, f"{name}_proj").kernel.value = at("mlp", f"{name}_proj", "kernel")
    return model


def tunix_train_step(model, ids: np.ndarray, lr: float):
    """(step, state): step(state) -> (state, loss); Tunix's default SFT loss + AdamW."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx
    from tunix.sft.peft_trainer import _default_loss_fn
    from tunix.sft.utils import make_causal_attn_mask

    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adamw(lr)
    tokens = jnp.asarray(ids)
    input_mask = jnp.ones_like(tokens, dtype=bool)
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    mask = make_causal_attn_mask(input_mask)

    def loss_fn(p):
        return _default_loss_fn(nnx.merge(graphdef, p), tokens, input_mask, positions, mask)

    step = donated_step(loss_fn, tx)
    params = jax.tree.map(jnp.copy, params)  # the step donates its state; the model keeps its own
    return step, (params, tx.init(params))


class IdTokenizer:
    """Token ids written as decimal words: what Tunix's sampler needs of a tokenizer."""

    def encode(self, text: str, **_) -> list[int]:
        return [int(w) for w in text.split()]

    def decode(self, ids, **_) -> str:
        return " ".join(str(i) for i in ids)

    def bos_id(self) -> int:
        return 0  # falsy: the sampler adds no BOS

    def eos_id(self) -> int:
        return -1

    def pad_id(self) -> int:
        return 0


def tunix_sampler(model, cache_size: int):
    from tunix.generate.sampler import CacheConfig, Sampler

    cfg = model.config
    return Sampler(model, IdTokenizer(), CacheConfig(cache_size=cache_size,
                                                     num_layers=cfg.num_layers,
                                                     num_kv_heads=cfg.num_kv_heads,
                                                     head_dim=cfg.head_dim))


def tunix_generate(sampler, ids: np.ndarray, new_tokens: int, temperature: float,
                   top_p: float, seed: int = 0) -> np.ndarray:
    """[B, new_tokens] sampled tokens; ids must hold no 0 (the pad id). No stop token: eos
    is -1, which is never sampled."""
    out = sampler([" ".join(map(str, row)) for row in ids], max_generation_steps=new_tokens,
                  max_prompt_length=ids.shape[1], eos_tokens=[-1], temperature=temperature,
                  top_p=top_p, seed=seed)
    tokens = np.stack([np.asarray(t) for t in out.tokens])
    if tokens.shape[1] != new_tokens:
        raise RuntimeError(f"Tunix generated {tokens.shape[1]} tokens, expected {new_tokens}")
    return tokens
