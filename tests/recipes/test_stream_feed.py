"""`recipes.inputs.stream_feed`, the training set of `r1v2 train`: checked before step 1,
streamed in the run's order, a corrupt image body dropped and counted while training (or
refused up front with data.check_image_bodies)."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from r1v2_jax.data.records import RecordError
from r1v2_jax.models import VLMConfig
from r1v2_jax.recipes import inputs
from r1v2_jax.train.config_loader import load_config_file
from tests.hf_fixtures import make_qwen2_tokenizer


def _png(seed: int, size=(56, 28)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def setup(tmp_path):
    cfg = load_config_file("configs/grpo_38b.py:smoke")
    cfg.train.seed = 3
    cfg.data.update(num_threads=2, prefetch=2, replay_cache=2)
    from r1v2_jax.data.tokenizer import load_tokenizer
    tokenizer = load_tokenizer(make_qwen2_tokenizer(tmp_path / "tok"))
    model = VLMConfig.from_dict(load_config_file("configs/tiny.py").model.to_dict()).replace(
        image_token_id=tokenizer.img_context_id, max_dynamic_patch=4, dynamic_image_size=True)
    prompt = inputs.prompt_config(model, tokenizer, cfg)
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(5):
        data = _png(i)
        if i == 2:  # a header PIL reads, a body it cannot: only a full decode finds it
            data = data[:len(data) // 2]
        (tmp_path / "img" / f"{i}.png").write_bytes(data)
        rows.append({"images": [f"img/{i}.png"], "question": f"How many? {i}",
                     "answer": str(i), "answer_type": "number"})
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return cfg, model, tokenizer, prompt, str(path)


def test_a_corrupt_body_is_dropped_and_counted_while_training(setup):
    cfg, model, tokenizer, prompt, path = setup
    feed = inputs.stream_feed(cfg, model, tokenizer, prompt, path, "prompt", log=lambda m: None)
    assert len(feed) == 5  # headers only before step 1: the corrupt body passes
    assert feed.limits.tiles == 2  # 56x28: a 1x2 grid (the tiny model has no thumbnail)
    assert feed.metrics() == {"data/decode_failures": 0.0}
    uids = [e.uid for e in feed.take(8)]
    assert 2 not in uids and sorted(set(uids)) == [0, 1, 3, 4]
    assert feed.metrics() == {"data/decode_failures": 1.0}
    assert all(e.pixel_values.dtype == np.float32 and len(e.pixel_values) == 2
               for e in feed.take(2))
    assert "img/2.png" in feed.pipe.decode_messages[0]


def test_check_image_bodies_refuses_it_before_training(setup):
    cfg, model, tokenizer, prompt, path = setup
    cfg.data.check_image_bodies = True
    with pytest.raises(RecordError, match=r"train.jsonl:3: .*2.png"):
        inputs.stream_feed(cfg, model, tokenizer, prompt, path, "prompt", log=lambda m: None)
    cfg.data.on_invalid = "skip"
    logs = []
    feed = inputs.stream_feed(cfg, model, tokenizer, prompt, path, "prompt", log=logs.append)
    assert len(feed) == 4 and "skipped 1 invalid record(s): {'image_corrupt': 1}" in logs[0]
