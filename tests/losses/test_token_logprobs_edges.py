"""Token log-probs: keyword defaults, hand-computed temperatures, and the exact messages of
every argument check (each at its boundary)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from r1v2_jax.losses import entropy_from_logits, logprobs_from_logits, token_logprobs

# logits [ln 4, 0]: softmax [0.8, 0.2]; at temperature 2: [ln 2, 0] -> [2/3, 1/3]
TWO = jnp.asarray([[math.log(4.0), 0.0]], jnp.float32)


def test_defaults_are_temperature_one_and_logprobs_only():
    # hidden [1, 1, 2] @ kernel = identity -> logits [ln 4, 0]
    hidden = TWO[:, None, :]
    out = token_logprobs(hidden, jnp.eye(2), jnp.asarray([[1]]))
    assert not isinstance(out, tuple)
    np.testing.assert_allclose(out, [[math.log(0.2)]], rtol=1e-6)
    np.testing.assert_allclose(logprobs_from_logits(TWO, jnp.asarray([0])), [math.log(0.8)],
                               rtol=1e-6)
    h = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    np.testing.assert_allclose(entropy_from_logits(TWO), [h], rtol=1e-6)


def test_temperature_divides_the_logits_everywhere():
    hidden = TWO[:, None, :]
    lp, ent = token_logprobs(hidden, jnp.eye(2), jnp.asarray([[0]]), temperature=2.0,
                             return_entropy=True)
    h = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    np.testing.assert_allclose(lp, [[math.log(2 / 3)]], rtol=1e-6)
    np.testing.assert_allclose(ent, [[h]], rtol=1e-6)
    np.testing.assert_allclose(entropy_from_logits(TWO, 2.0), [h], rtol=1e-6)


def test_chunks_that_do_not_divide_the_length_keep_every_position():
    # T = 3, chunk 2: the padded tail is dropped; position t has logits [t ln 2, 0]
    logits = np.array([[[t * math.log(2.0), 0.0] for t in range(3)]], np.float32)
    lp = token_logprobs(jnp.asarray(logits), jnp.eye(2), jnp.zeros((1, 3), jnp.int32),
                        chunk_size=2)
    np.testing.assert_allclose(lp, [[math.log(0.5), math.log(2 / 3), math.log(0.8)]], rtol=1e-6)


H = jnp.zeros((2, 3, 4))
W = jnp.zeros((4, 5))
Y = jnp.zeros((2, 3), jnp.int32)
TL = "token_logprobs"


@pytest.mark.parametrize("call,message", [
    (lambda: token_logprobs(H[0], W, Y), f"{TL}: hidden must have 3 dims, got shape (3, 4)"),
    (lambda: token_logprobs(H, W[None], Y), f"{TL}: lm_head_kernel must have 2 dims, got shape (1, 4, 5)"),
    (lambda: token_logprobs(H, W.T, Y), f"{TL}: lm_head_kernel must be [E=4, V], got (5, 4)"),
    (lambda: token_logprobs(H, W, Y[:, :2]), f"{TL}: targets must have shape (2, 3), got (2, 2)"),
    (lambda: token_logprobs(H, W, Y, chunk_size=0), f"{TL}: chunk_size must be a positive Python int, got 0"),
    (lambda: token_logprobs(H, W, Y, chunk_size=True),
     f"{TL}: chunk_size must be a positive Python int, got True"),
    (lambda: token_logprobs(H, W, Y, chunk_size=2.0),
     f"{TL}: chunk_size must be a positive Python int, got 2.0"),
    (lambda: token_logprobs(H, W, Y, temperature=0.0), f"{TL}: temperature must be > 0, got 0.0"),
    (lambda: token_logprobs(H, W, Y, temperature=jnp.float32(1.0)),
     f"{TL}: temperature must be a Python float (a static option), got ArrayImpl"),
    (lambda: logprobs_from_logits(TWO, jnp.asarray([0, 1])),
     "logprobs_from_logits: targets must have shape (1,), got (2,)"),
    (lambda: logprobs_from_logits(TWO, jnp.asarray([0]), 0.0),
     "logprobs_from_logits: temperature must be > 0, got 0.0"),
    (lambda: entropy_from_logits(TWO, 0.0), "entropy_from_logits: temperature must be > 0, got 0.0"),
    (lambda: entropy_from_logits(TWO, jnp.float32(1.0)),
     "entropy_from_logits: temperature must be a Python float (a static option), got ArrayImpl"),
])
def test_bad_arguments_name_the_function_and_argument(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == message


def test_smallest_valid_options_are_accepted():
    out = token_logprobs(H, W, Y, chunk_size=1, temperature=1e-3)
    np.testing.assert_allclose(out, np.full((2, 3), math.log(1 / 5)), rtol=1e-6)
