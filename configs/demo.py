"""The demo model: a few million parameters, CPU-trainable in minutes.

56x56 images, patch 7 -> 8x8 patches -> pixel shuffle -> 16 image tokens per tile. The
vocabulary size is set from the demo tokenizer at run time (`text.vocab_size` here is an
upper bound the tokenizer must fit in).
"""

import ml_collections


def model():
    return ml_collections.ConfigDict(dict(
        vision=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                    image_size=56, patch_size=7, qkv_bias=False, qk_normalization=True,
                    norm_type="rms_norm", layer_norm_eps=1e-6),
        text=dict(vocab_size=160, hidden_size=192, intermediate_size=512, num_hidden_layers=4,
                  num_attention_heads=6, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6,
                  rope_theta=10000.0, max_position_embeddings=1024, tie_word_embeddings=False,
                  bos_token_id=0, eos_token_id=1),
        downsample_ratio=0.5, ps_version="v2", select_layer=-1, image_token_id=5,
        force_image_size=56, max_dynamic_patch=1, min_dynamic_patch=1, use_thumbnail=False,
        param_dtype="float32", dtype="float32", attention_impl="xla", remat_policy="none",
    ))


def get_config(arg=None):
    """A model config; `:smoke` is accepted (nothing to shrink) so every file takes it."""
    if arg not in (None, "", "smoke"):
        raise ValueError(f"unknown config argument {arg!r}; known: 'smoke'")
    return ml_collections.ConfigDict({"model": model()})
