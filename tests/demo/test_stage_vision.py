"""The demo's vision stage: cell labels by hand, the held-out split respected, and a short
probe training that teaches the encoder to see while leaving the language model alone."""


import jax
import numpy as np

from r1v2_jax.data import synthetic as S
from r1v2_jax.demo import stage_vision as V
from r1v2_jax.demo.pipeline import build_context
from r1v2_jax.demo.cli import default_config_path
from r1v2_jax.models import init_params
from r1v2_jax.train.config_loader import apply_overrides, load_config_file


def test_cell_labels_by_hand():
    scene = S.Scene((S.Shape("triangle", "yellow", "large", 42, 42, 10),
                     S.Shape("circle", "red", "small", 14, 14, 5)), 56, (0, 0, 0))
    # cells row-major; kind circle/square/triangle = 1/2/3, colour red..yellow = 1..4,
    # size small/large = 1/2, 0 = empty
    np.testing.assert_array_equal(V.cell_labels(scene), [[1, 1, 1], [0, 0, 0], [0, 0, 0],
                                                          [3, 4, 2]])


def test_probe_scenes_keep_to_their_split():
    cfg = S.SyntheticConfig()
    train = V.probe_scenes(40, 0, cfg, heldout_fraction=0.3)
    held = V.probe_scenes(10, 0, cfg, heldout_fraction=0.3, heldout=True)
    assert len(train) == 40 and len(held) == 10
    assert not any(S.is_heldout(s, 0.3) for s in train)
    assert all(S.is_heldout(s, 0.3) for s in held)


def test_vision_stage_learns_to_see_and_leaves_the_lm_alone(tmp_path):
    cfg = apply_overrides(load_config_file(default_config_path()), [
        "config.demo.num_examples=40", "config.demo.num_heldout=4",
        "config.vision.steps=60", "config.vision.batch_size=32", "config.vision.eval_scenes=64"])
    ctx = build_context(cfg, str(tmp_path), log=lambda _: None)
    params = init_params(ctx.model, jax.random.key(0))
    new, metrics = V.run_vision_stage(ctx, params, str(tmp_path / "vision"))
    # chance for colour (5 classes incl. empty) is ~0.4 by always answering "empty"
    assert metrics["probe_accuracy_color"] > 0.8, metrics
    assert metrics["probe_accuracy_kind"] > 0.5, metrics
    same = jax.tree.map(lambda a, b: bool((a == b).all()), params["text"], new["text"])
    assert all(jax.tree.leaves(same))
    moved = jax.tree.map(lambda a, b: bool((a != b).any()), params["vision"], new["vision"])
    assert any(jax.tree.leaves(moved))
