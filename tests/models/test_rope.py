"""RoPE uses the configured theta: apply_rope against the closed form, written in NumPy.

Rotate-half convention: the pair (x_j, x_{j+D/2}) is rotated by pos * theta^(-2j/D).
theta = 5e5 is neither R1V2's 1e6 nor the 1e4 a hard-coded RoPE would use."""

import jax.numpy as jnp
import numpy as np

from r1v2_jax.models.qwen2 import apply_rope


def _closed_form(x, positions, theta):
    d = x.shape[-1]
    out = np.empty_like(x, dtype=np.float64)
    for j in range(d // 2):
        angle = positions[:, :, None] * theta ** (-2.0 * j / d)  # [B, T, 1]
        a, b = x[..., j], x[..., j + d // 2]
        out[..., j] = a * np.cos(angle) - b * np.sin(angle)
        out[..., j + d // 2] = b * np.cos(angle) + a * np.sin(angle)
    return out


def test_rope_uses_the_configured_theta():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 3, 8)).astype(np.float32)
    positions = np.array([[0, 1, 2, 3, 4], [7, 8, 9, 30, 31]])
    got = np.asarray(apply_rope(jnp.asarray(x), jnp.asarray(positions), 5e5))
    np.testing.assert_allclose(got, _closed_form(x, positions, 5e5), atol=2e-5)
    # the theta matters at these positions: 1e4 would be far off
    assert np.abs(_closed_form(x, positions, 1e4) - _closed_form(x, positions, 5e5)).max() > 0.1
    np.testing.assert_allclose(got[:, :1][0], x[0, :1], atol=1e-6)  # position 0: identity
