"""Skywork-R1V2-38B: InternViT-6B (45 layers) + mlp1 + QwQ-32B (Qwen2, 64 layers).

Every number is the released checkpoint's (tests/fixtures/r1v2_38b_config.json); the converter reads the same values
from the checkpoint's own config.json. 38,392,158,592 parameters (tests/models).
"""

import ml_collections


def model():
    return ml_collections.ConfigDict(dict(
        vision=dict(hidden_size=3200, num_hidden_layers=45, num_attention_heads=25,
                    intermediate_size=12800, image_size=448, patch_size=14, num_channels=3,
                    qkv_bias=False, qk_normalization=True, norm_type="rms_norm",
                    layer_norm_eps=1e-6),
        text=dict(vocab_size=152064, hidden_size=5120, intermediate_size=27648, num_hidden_layers=64,
                  num_attention_heads=40, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5,
                  rope_theta=1e6, max_position_embeddings=40960, tie_word_embeddings=False,
                  bos_token_id=151643, eos_token_id=151645),
        downsample_ratio=0.5, ps_version="v2", select_layer=-1, image_token_id=151667,
        force_image_size=448, dynamic_image_size=True, use_thumbnail=True, min_dynamic_patch=1,
        max_dynamic_patch=12, template="skywork-r1v-chat",
        param_dtype="bfloat16", dtype="bfloat16", attention_impl="xla", remat_policy="full",
        # 16k-token sequences: 512-query causal blocks keep the unrolled xla path small (32
        # blocks); the CPU default of 64 would unroll 256 (models/config.py).
        causal_block=512,
    ))


def get_config(arg=None):
    """A model config; `:smoke` is accepted (nothing to shrink) so every file takes it."""
    if arg not in (None, "", "smoke"):
        raise ValueError(f"unknown config argument {arg!r}; known: 'smoke'")
    return ml_collections.ConfigDict({"model": model()})
