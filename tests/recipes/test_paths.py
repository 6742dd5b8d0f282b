"""The recipe layer reads and writes through etils.epath: tokenizer folders, records with
their images, config.json and metrics on a non-local store (gs:// served from memory)."""

import json

import numpy as np
import pytest
from etils import epath
from PIL import Image

from r1v2_jax.models import VLMConfig
from r1v2_jax.recipes import inputs, paths
from r1v2_jax.recipes.cli import check_config_change
from r1v2_jax.recipes.validate import RecipeError, validate_recipe
from r1v2_jax.train.config_loader import load_config_file
from r1v2_jax.train.metrics import MetricsWriter
from tests.hf_fixtures import make_qwen2_tokenizer


def _upload(local, remote: epath.Path):
    for f in local.rglob("*"):
        if f.is_file():
            (remote / f.relative_to(local)).parent.mkdir(parents=True, exist_ok=True)
            (remote / f.relative_to(local)).write_bytes(f.read_bytes())


@pytest.fixture
def bucket(gcs_in_memory, tmp_path):
    root = epath.Path("gs://r1v2-test")
    tok = make_qwen2_tokenizer(tmp_path / "tok")
    _upload(tok, root / "tok")
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    Image.fromarray(np.full((28, 56, 3), 200, np.uint8)).save(data / "img" / "x.png")
    rows = [{"images": ["img/x.png"], "question": "How many?", "answer": "2",
             "answer_type": "number", "meta": {"source": "mmk12", "id": 7}},
            {"question": "Pick one. (A) a (B) b", "answer": "A", "answer_type": "choice"}]
    (data / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _upload(data, root / "data")
    return root


def test_tokenizer_and_records_from_a_bucket(bucket):
    cfg = load_config_file("configs/grpo_38b.py:smoke")
    cfg.tokenizer = str(bucket / "tok")
    tokenizer, where = inputs.load_recipe_tokenizer(cfg)
    assert where == "gs://r1v2-test/tok" and tokenizer.img_context_id == 100
    assert tokenizer.chat_template is not None
    model = VLMConfig.from_dict(load_config_file("configs/tiny.py").model.to_dict()).replace(
        image_token_id=100, max_dynamic_patch=4, dynamic_image_size=True)
    prompt = inputs.prompt_config(model, tokenizer, cfg)
    examples = inputs.prompt_examples(cfg, model, tokenizer, prompt,
                                      str(bucket / "data" / "prompts.jsonl"))
    assert [e.answer for e in examples] == ["2", "A"]
    assert examples[0].scene is None  # a record's meta is not taken for a synthetic scene
    assert len(examples[0].pixel_values) == 2 and len(examples[1].pixel_values) == 0
    assert tokenizer.decode(examples[1].prompt_ids).endswith("<|im_start|>assistant\n<think>\n")


def test_validation_and_run_files_on_a_bucket(bucket):
    cfg = load_config_file("configs/grpo_38b.py:smoke")
    cfg.init.checkpoint = str(bucket / "tok")  # exists; the check is about paths
    cfg.data.train = str(bucket / "data" / "prompts.jsonl")
    cfg.data.heldout = str(bucket / "data" / "missing.jsonl")
    with pytest.raises(RecipeError, match="config.data.heldout: gs://r1v2-test/data/missing"):
        validate_recipe(cfg)
    cfg.data.heldout = cfg.data.train
    with pytest.raises(RecipeError, match="config.reward.rm_checkpoint is empty: reward.w_rm=0.5"):
        validate_recipe(cfg)
    cfg.reward.w_rm = 0.0
    validate_recipe(cfg)

    workdir = str(bucket / "runs" / "grpo")
    paths.write_text_atomic(paths.join(workdir, "config.json"), cfg.to_json_best_effort())
    (epath.Path(workdir) / "checkpoints").mkdir(parents=True)
    check_config_change(workdir, cfg, allow=False)  # same config: fine
    cfg.optim.lr = 3e-6
    with pytest.raises(RecipeError, match=r"optim.lr: 1e-06 -> 3e-06"):
        check_config_change(workdir, cfg, allow=False)
    check_config_change(workdir, cfg, allow=True)
    writer = MetricsWriter(workdir, tensorboard=False)
    writer.write({"step": 1, "loss": float("nan")})
    writer.close()
    line = json.loads((epath.Path(workdir) / "metrics.jsonl").read_text().splitlines()[0])
    assert line == {"step": 1, "loss": None}
