"""The Tunix peer computes the same function as our model on the same weights (logits,
the train step's loss and its update), and its sampler yields exactly the asked tokens."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("tunix")

from r1v2_jax.models import VLM, init_params  # noqa: E402
from r1v2_jax.models.config import TextConfig, VisionConfig, VLMConfig  # noqa: E402
from r1v2_jax.tools.bench_tunix import (tunix_generate, tunix_qwen2, tunix_sampler,  # noqa: E402
                                        tunix_train_step)

CONFIG = VLMConfig(
    vision=VisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, image_size=28, patch_size=7),
    text=TextConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8, rope_theta=500.0,
                    rms_norm_eps=1e-5))


@pytest.fixture(scope="module")
def params():
    p = init_params(CONFIG, jax.random.key(0))
    # Non-trivial norms and biases (they init to ones / zeros): a mis-copied one shows.
    leaves, tree = jax.tree.flatten(p)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return jax.tree.unflatten(tree, [x + 0.1 * jax.random.normal(k, x.shape)
                                     for x, k in zip(leaves, keys)])


def test_same_logits_as_our_model(params):
    from tunix.sft.utils import make_causal_attn_mask

    ids = np.random.default_rng(0).integers(1, 95, (2, 10)).astype(np.int32)
    ours = VLM(CONFIG).apply({"params": params}, jnp.asarray(ids)).logits
    positions = jnp.broadcast_to(jnp.arange(10), (2, 10))
    theirs, _ = tunix_qwen2(CONFIG, params)(jnp.asarray(ids), positions, None,
                                            make_causal_attn_mask(jnp.ones((2, 10), bool)))
    np.testing.assert_allclose(theirs, ours, atol=2e-5)
    assert float(jnp.abs(ours).max()) > 0.5  # not trivially small


def test_train_step_loss_is_the_mean_next_token_nll(params):
    ids = np.random.default_rng(1).integers(1, 95, (2, 10)).astype(np.int32)
    logits = VLM(CONFIG).apply({"params": params}, jnp.asarray(ids)).logits[:, :-1]
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), ids[:, 1:, None], -1).mean()
    model = tunix_qwen2(CONFIG, params)
    step, state = tunix_train_step(model, ids, lr=1e-2)
    state, loss = step(state)
    assert float(loss) == pytest.approx(float(nll), rel=1e-5)
    _, loss2 = step(state)
    assert float(loss2) < float(loss)  # AdamW moved the weights
    # The step donates its own copy: the model still holds the weights.
    assert np.isfinite(np.asarray(model.embedder.input_embedding.value)).all()


def test_sampler_generates_exactly_the_new_tokens(params):
    ids = np.random.default_rng(2).integers(1, 95, (3, 5))
    sampler = tunix_sampler(tunix_qwen2(CONFIG, params), cache_size=5 + 7)
    out = tunix_generate(sampler, ids, 7, temperature=0.6, top_p=0.95)
    assert out.shape == (3, 7) and ((out >= 0) & (out < 96)).all()
