"""The tiny model used by the tests: every code path, a few thousand parameters."""

import ml_collections


def model():
    return ml_collections.ConfigDict(dict(
        vision=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    image_size=28, patch_size=7, qkv_bias=False, qk_normalization=True,
                    norm_type="rms_norm", layer_norm_eps=1e-5),
        text=dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6,
                  rope_theta=5e5, max_position_embeddings=512, tie_word_embeddings=False,
                  bos_token_id=0, eos_token_id=1),
        downsample_ratio=0.5, ps_version="v2", select_layer=-1, image_token_id=5,
        force_image_size=28, max_dynamic_patch=1, use_thumbnail=False,
        param_dtype="float32", dtype="float32", attention_impl="xla", remat_policy="none",
    ))


def get_config(arg=None):
    """A model config; `:smoke` is accepted (nothing to shrink) so every file takes it."""
    if arg not in (None, "", "smoke"):
        raise ValueError(f"unknown config argument {arg!r}; known: 'smoke'")
    return ml_collections.ConfigDict({"model": model()})
