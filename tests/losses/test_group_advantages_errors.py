"""group_advantages rejects bad options with messages naming the function and the
argument (exact strings), each check at its boundary."""

import jax.numpy as jnp
import numpy as np
import pytest

from r1v2_jax.losses import group_advantages

R4 = jnp.asarray([1.0, 0.0, 2.0, 5.0])
FN = "group_advantages"


@pytest.mark.parametrize("args,kw,message", [
    ((R4, 2), dict(scale="token"), f"{FN}: scale='token' is not one of ['batch', 'group', 'none']"),
    ((R4, 2), dict(estimator="ppo"), f"{FN}: estimator='ppo' is not one of ['grpo', 'rloo']"),
    ((R4.reshape(2, 2), 2), {}, f"{FN}: rewards must have 1 dims, got shape (2, 2)"),
    ((R4, 0), {}, f"{FN}: group_size must be a positive Python int, got 0"),
    ((R4, True), {}, f"{FN}: group_size must be a positive Python int, got True"),
    ((R4, 2.0), {}, f"{FN}: group_size must be a positive Python int, got 2.0"),
    ((R4, 3), {}, f"{FN}: rewards length 4 is not a multiple of group_size 3"),
    ((R4, 2), dict(std_ddof=2), f"{FN}: std_ddof must be 0 or 1, got 2"),
    ((R4, 2), dict(eps=jnp.float32(1e-4)),
     f"{FN}: eps must be a Python float (a static option), got ArrayImpl"),
    ((R4, 1), dict(estimator="rloo", scale="none"),
     f"{FN}: estimator='rloo' needs group_size >= 2 (a leave-one-out baseline)"),
    ((R4, 1), dict(scale="group", std_ddof=1),
     f"{FN}: scale='group' with std_ddof=1 needs group_size > 1"),
    ((R4[:1], 1), dict(scale="batch", std_ddof=1),
     f"{FN}: scale='batch' with std_ddof=1 needs more than 1 rewards"),
])
def test_bad_options_name_the_argument(args, kw, message):
    with pytest.raises(ValueError) as err:
        group_advantages(*args, **kw)
    assert str(err.value) == message


@pytest.mark.parametrize("args,kw", [
    ((R4, 2), dict(estimator="rloo", scale="none")),  # the smallest leave-one-out group
    ((R4, 1), dict(scale="group", std_ddof=0)),
    ((R4[:2], 1), dict(scale="batch", std_ddof=1)),  # 2 rewards > ddof 1
    ((R4, 1), dict(scale="none")),
])
def test_boundary_options_are_accepted(args, kw):
    out = np.asarray(group_advantages(*args, **kw))
    assert out.shape == (len(args[0]),) and np.isfinite(out).all()
