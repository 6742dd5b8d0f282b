"""Building blocks shared by the vision encoder, the adapter and the LM.

Every parameter is created through `param_with_axes` so it carries logical axis names;
`r1v2_jax.sharding.rules` maps those names onto mesh axes. Norms compute in fp32 whatever
the compute dtype, then cast back (as both PyTorch references do).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
Initializer = Callable[..., jax.Array]


def param_with_axes(module: nn.Module, name: str, init: Initializer, shape: Sequence[int],
                    dtype: Dtype, axes: Sequence[str | None]) -> jax.Array:
    return module.param(name, nn.with_logical_partitioning(init, tuple(axes)), tuple(shape), dtype)


def as_rows(fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """fn applied to x viewed as [tokens, channels], reshaped back.

    For every op that broadcasts a per-channel parameter over the tokens (norm scales,
    biases, layer scales): the parameter's gradient is then a reduction of a 2-D array
    over its rows. Left 3-D, a batch of one makes it a reduction of [1, T, C] over T, which
    XLA's CPU backend (jax 0.10, YNNPACK reductions) runs ~75x slower (10 ms vs 0.13 ms
    at 2048 x 256; docs/benchmarks.md)."""
    return fn(x.reshape(-1, x.shape[-1])).reshape(x.shape[:-1] + (-1,))


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * scale, computed in fp32."""

    eps: float
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    axis_name: str = "embed"

    @nn.compact
    def __call__(self, x):
        scale = param_with_axes(self, "scale", nn.initializers.ones, (x.shape[-1],),
                                self.param_dtype, (self.axis_name,))

        def norm(rows):
            x32 = rows.astype(jnp.float32)
            y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
            # Reference order: normalise in fp32, cast to the input dtype, then scale.
            return (scale.astype(self.dtype) * y.astype(self.dtype)).astype(self.dtype)

        return as_rows(norm, x)


class LayerNorm(nn.Module):
    """Standard LayerNorm with bias, statistics in fp32."""

    eps: float
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    axis_name: str = "embed"

    @nn.compact
    def __call__(self, x):
        dim = x.shape[-1]
        scale = param_with_axes(self, "scale", nn.initializers.ones, (dim,), self.param_dtype,
                                (self.axis_name,))
        bias = param_with_axes(self, "bias", nn.initializers.zeros, (dim,), self.param_dtype,
                               (self.axis_name,))

        def norm(rows):
            x32 = rows.astype(jnp.float32)
            mean = jnp.mean(x32, axis=-1, keepdims=True)
            var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
            y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
            return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)

        return as_rows(norm, x)


def make_norm(norm_type: str, eps: float, dtype: Dtype, param_dtype: Dtype, axis_name: str,
              name: str) -> nn.Module:
    if norm_type == "rms_norm":
        return RMSNorm(eps, dtype, param_dtype, axis_name, name=name)
    if norm_type == "layer_norm":
        return LayerNorm(eps, dtype, param_dtype, axis_name, name=name)
    raise ValueError(f"norm_type must be 'rms_norm' or 'layer_norm', got {norm_type!r}")


class Dense(nn.Module):
    """y = x @ kernel (+ bias) with a kernel of shape in_shape + out_shape.

    `in_axes`/`out_axes` are the logical names of the contracted and produced axes; the
    number of contracted trailing input axes is len(in_axes). Used both for plain Linear
    layers and for head-split projections (e.g. [E] -> [H, D] or [H, D] -> [E]).
    """

    out_shape: tuple[int, ...]
    in_axes: tuple[str | None, ...]
    out_axes: tuple[str | None, ...]
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        n_in = len(self.in_axes)
        in_shape = x.shape[-n_in:]
        fan_in = 1
        for d in in_shape:
            fan_in *= d

        def init(key, shape, dtype):
            # Initialise as a 2D [fan_in, fan_out] matrix so fan-based inits are right.
            flat = self.kernel_init(key, (fan_in, _prod(shape[n_in:])), dtype)
            return flat.reshape(shape)

        kernel = param_with_axes(self, "kernel", init, tuple(in_shape) + tuple(self.out_shape),
                                 self.param_dtype, self.in_axes + self.out_axes)
        x = x.astype(self.dtype)
        kernel = kernel.astype(self.dtype)
        # One 2D matmul [tokens, fan_in] x [fan_in, fan_out]: the weight gradient then
        # contracts a single axis. With the leading axes kept separate, XLA's CPU backend
        # emits the backward (contracting batch and time together) about 2x slower.
        # The bias is added to the 2-D product too (see `as_rows`).
        lead = x.shape[:x.ndim - n_in]
        y = jnp.dot(x.reshape(-1, fan_in), kernel.reshape(fan_in, -1))
        if self.use_bias:
            bias = param_with_axes(self, "bias", nn.initializers.zeros, self.out_shape,
                                   self.param_dtype, self.out_axes)
            y = y + bias.astype(self.dtype).reshape(-1)
        return y.reshape(lead + tuple(self.out_shape))


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= x
    return out


def gelu_exact(x):
    return jax.nn.gelu(x, approximate=False)


REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    "everything": jax.checkpoint_policies.everything_saveable,
}


def scan_layers(layer_cls: type[nn.Module], num_layers: int, remat_policy: str, *,
                in_axes=(), length_name: str = "layers") -> type[nn.Module]:
    """Wraps a layer class in (optional) remat + nn.scan over a leading `layers` axis.

    The layer's __call__ must be `(carry, *scanned_or_broadcast) -> (carry, per_layer_out)`.
    """
    if remat_policy not in REMAT_POLICIES:
        raise ValueError(f"remat_policy must be one of {sorted(REMAT_POLICIES)}, got {remat_policy!r}")
    cls = layer_cls
    if remat_policy != "none":
        cls = nn.remat(layer_cls, policy=REMAT_POLICIES[remat_policy], prevent_cse=False)
    return nn.scan(
        cls,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=in_axes,
        length=num_layers,
        metadata_params={nn.PARTITION_NAME: length_name},
    )
