"""The mlp1 adapter against an index-by-index NumPy reference: pixel shuffle (v1 / v2, a
non-square grid, ratio 1/2 and 1/4), then LayerNorm (eps 1e-2, not the 1e-5 default) ->
fc1 -> exact GELU -> fc2, and the messages of its checks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import meta

from r1v2_jax.models import TextConfig, VisionConfig, VLMConfig
from r1v2_jax.models.adapter import Adapter, pixel_shuffle


def shuffle_reference(x, r, version):
    """out[n, a, b, (r*m + k)*C + c] = x[n, r*a + m, r*b + k, c] (v2; v1 swaps a and b),
    InternVL's view/permute sequence written as indices."""
    n, w, h, c = x.shape
    out = np.zeros((n, w // r, h // r, r * r * c), x.dtype)
    for a in range(w // r):
        for b in range(h // r):
            for m in range(r):
                for k in range(r):
                    out[:, a, b, (r * m + k) * c:(r * m + k + 1) * c] = x[:, r * a + m, r * b + k]
    return out if version == "v2" else out.transpose(0, 2, 1, 3)


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("ratio,shape", [(0.5, (2, 4, 6, 3)), (0.25, (1, 8, 4, 2))])
def test_pixel_shuffle_indices(version, ratio, shape):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    got = np.asarray(pixel_shuffle(jnp.asarray(x), ratio, version))
    np.testing.assert_array_equal(got, shuffle_reference(x, round(1 / ratio), version))


@pytest.mark.parametrize("args,message", [
    (((1, 4, 4, 2), 0.5, "v3"), "ps_version must be 'v1' or 'v2', got 'v3'"),
    (((1, 4, 6, 2), 0.25, "v2"), "feature grid 4x6 is not divisible by 1/downsample_ratio=4"),
    (((1, 6, 4, 2), 0.25, "v2"), "feature grid 6x4 is not divisible by 1/downsample_ratio=4"),
])
def test_pixel_shuffle_rejects_bad_input(args, message):
    shape, ratio, version = args
    with pytest.raises(ValueError) as err:
        pixel_shuffle(jnp.zeros(shape), ratio, version)
    assert str(err.value) == message


def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def test_adapter_matches_numpy():
    cfg = VLMConfig(vision=VisionConfig(hidden_size=3), text=TextConfig(hidden_size=5),
                    downsample_ratio=0.5, ps_version="v2", projector_layer_norm_eps=1e-2)
    rng = np.random.default_rng(0)
    feats = (0.05 * rng.standard_normal((2, 16, 3))).astype(np.float32)  # small: eps matters
    model = Adapter(cfg)
    params = meta.unbox(model.init(jax.random.key(0), jnp.asarray(feats)))["params"]
    params = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)
    got = np.asarray(model.apply({"params": params}, jnp.asarray(feats)))

    p = jax.tree.map(np.asarray, params)
    x = shuffle_reference(feats.reshape(2, 4, 4, 3), 2, "v2").reshape(2, 4, 12).astype(np.float64)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    x = (x - mean) / np.sqrt(var + 1e-2) * p["norm"]["scale"] + p["norm"]["bias"]
    x = _gelu(x @ p["fc1"]["kernel"] + p["fc1"]["bias"])
    expected = x @ p["fc2"]["kernel"] + p["fc2"]["bias"]
    assert got.shape == (2, 4, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # the eps is not negligible at this feature scale
    x0 = shuffle_reference(feats.reshape(2, 4, 4, 3), 2, "v2").reshape(2, 4, 12)
    assert np.sqrt(x0.var(-1) + 1e-2).min() > 1.3 * np.sqrt(x0.var(-1) + 1e-5).max()


def test_adapter_params_shard_by_the_default_rules():
    """The logical axis names meet the sharding rules: the 4C-wide adapter input is split over
    `tensor`, the LM width over `fsdp`, fc2's output stays replicated (embed_out)."""
    import flax.linen as nn
    from jax.sharding import PartitionSpec as P

    from r1v2_jax.sharding.rules import DEFAULT_RULES

    cfg = VLMConfig(vision=VisionConfig(hidden_size=3), text=TextConfig(hidden_size=5))
    boxed = Adapter(cfg).init(jax.random.key(0), jnp.zeros((1, 16, 3)))["params"]
    logical = nn.get_partition_spec(boxed)
    names = {a for spec in jax.tree.leaves(logical, is_leaf=lambda x: isinstance(x, P)) for a in spec}
    assert names <= {name for name, _ in DEFAULT_RULES}  # no name the rules silently replicate
    specs = jax.tree.map(lambda s: nn.logical_to_mesh_axes(s, DEFAULT_RULES), logical,
                         is_leaf=lambda x: isinstance(x, P))
    assert specs == {"norm": {"scale": P("tensor"), "bias": P("tensor")},
                     "fc1": {"kernel": P("tensor", "fsdp"), "bias": P("fsdp")},
                     "fc2": {"kernel": P("fsdp", None), "bias": P(None)}}
