"""The Hugging Face round trip with tokenizer, chat template and processor files:
released layout A (+ Qwen2-style tokenizer) -> to-jax -> to-hf -> AutoProcessor +
InternVLForConditionalGeneration, whose pixel_values equal r1v2_jax.data.image's."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from r1v2_jax.cli import main as cli_main
from r1v2_jax.convert import ConversionError, convert_to_hf, convert_to_jax, load_hf, save_hf
from r1v2_jax.convert.processor_files import GENERATION_DEFAULTS
from r1v2_jax.data import prompts as P
from r1v2_jax.data.image import TilingConfig, preprocess_images
from r1v2_jax.data.tokenizer import load_tokenizer
from tests.hf_fixtures import IMAGE_TOKEN_ID, QWQ_CHAT_TEMPLATE, make_tiny_hf, make_tiny_release

TOKENIZER = ["tokenizer.json", "tokenizer_config.json", "added_tokens.json"]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return make_tiny_release(tmp_path_factory.mktemp("release") / "R1V2-tiny", seed=0)


@pytest.fixture(scope="module")
def jax_folder(release, tmp_path_factory):
    return convert_to_jax(release, tmp_path_factory.mktemp("jax") / "ckpt", dtype=None)


@pytest.fixture(scope="module")
def hf_folder(jax_folder, tmp_path_factory):
    return convert_to_hf(jax_folder, tmp_path_factory.mktemp("hf") / "out", "hf")


def _auto_processor(folder, monkeypatch):
    """AutoProcessor.from_pretrained(folder). InternVLProcessor also builds a video processor,
    which needs torchvision; the CPU torch build here has no matching torchvision, so
    without it the video part (only) is left out."""
    from transformers import AutoProcessor

    try:
        import torchvision  # noqa: F401
    except ImportError:
        from transformers import ProcessorMixin
        from transformers.models.auto import video_processing_auto

        check = ProcessorMixin.check_argument_for_proper_class
        monkeypatch.setattr(video_processing_auto.AutoVideoProcessor, "from_pretrained",
                            classmethod(lambda cls, *a, **k: None))
        monkeypatch.setattr(ProcessorMixin, "check_argument_for_proper_class",
                            lambda self, name, arg: None if name == "video_processor" and arg
                            is None else check(self, name, arg))
    return AutoProcessor.from_pretrained(folder, backend="pil")


def test_to_jax_keeps_the_tokenizer_and_chat_template(release, jax_folder):
    assert [n for n in TOKENIZER if (jax_folder / n).is_file()] == TOKENIZER
    for name in TOKENIZER:
        assert (jax_folder / name).read_bytes() == (release / name).read_bytes()
    tok, original = load_tokenizer(jax_folder), load_tokenizer(release)
    assert tok.chat_template == QWQ_CHAT_TEMPLATE
    text = P.prompt_text("<image>\nHow many red circles?", [2],
                         P.PromptConfig(num_image_token=4, chat_template=tok.chat_template))
    assert tok.encode(text) == original.encode(text)
    assert tok.img_context_id == IMAGE_TOKEN_ID


@pytest.mark.parametrize("size", [(97, 41), (41, 130), (28, 28)])
def test_auto_processor_matches_our_tiling_and_prompt(hf_folder, jax_folder, monkeypatch, size):
    processor = _auto_processor(hf_folder, monkeypatch)
    config, _ = load_hf(hf_folder)
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, size[::-1] + (3,), dtype=np.uint8))
    ours = preprocess_images([image], TilingConfig(
        image_size=config.force_image_size, min_num=config.min_dynamic_patch,
        max_num=config.max_dynamic_patch, use_thumbnail=config.use_thumbnail))
    out = processor(images=image, text="<IMG_CONTEXT>\nHow many red circles?",
                    return_tensors="np")
    pixels = np.asarray(out["pixel_values"]).transpose(0, 2, 3, 1)  # [tiles, H, W, 3]
    assert pixels.shape == ours.pixel_values.shape and len(pixels) == ours.num_tiles[0]
    np.testing.assert_array_equal(pixels, ours.pixel_values)  # PIL backend: bit-exact
    tok = load_tokenizer(jax_folder)
    expanded = P.expand_image_tags("<image>\nHow many red circles?", ours.num_tiles,
                                   num_image_token=config.num_image_tokens)
    assert out["input_ids"][0].tolist() == tok.encode(expanded)


def test_transformers_loads_the_folder(hf_folder, monkeypatch, tmp_path):
    from transformers import GenerationConfig, InternVLForConditionalGeneration

    names = sorted(p.name for p in hf_folder.iterdir() if not p.name.endswith(".safetensors"))
    assert names == sorted(["config.json", "model.safetensors.index.json",
                            "generation_config.json", "preprocessor_config.json",
                            "processor_config.json", *TOKENIZER])
    gen = GenerationConfig.from_pretrained(hf_folder)
    assert (gen.bos_token_id, gen.eos_token_id, gen.pad_token_id) == (1, 2, 1)
    assert (gen.temperature, gen.top_p, gen.repetition_penalty, gen.do_sample) == (
        GENERATION_DEFAULTS["temperature"], GENERATION_DEFAULTS["top_p"],
        GENERATION_DEFAULTS["repetition_penalty"], True)
    processor = _auto_processor(hf_folder, monkeypatch)
    assert processor.tokenizer.chat_template == QWQ_CHAT_TEMPLATE
    assert processor.image_token_id == IMAGE_TOKEN_ID and processor.image_seq_length == 4
    model = InternVLForConditionalGeneration.from_pretrained(
        hf_folder, attn_implementation="eager").eval()
    _, reference = make_tiny_hf(tmp_path, layout="hf", seed=0)  # the weights of the release
    image = Image.fromarray(np.random.default_rng(7).integers(0, 256, (50, 90, 3), np.uint8))
    inputs = processor(images=image, text="<IMG_CONTEXT>\nHow many?", return_tensors="pt")
    with torch.no_grad():
        got = model(**inputs).logits
        want = reference(**inputs).logits
    assert got.shape[1] == inputs["input_ids"].shape[1] and torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_original_layout_gets_tokenizer_and_generation_config(jax_folder, tmp_path):
    out = convert_to_hf(jax_folder, tmp_path / "orig", "original")
    assert all((out / n).is_file() for n in TOKENIZER + ["generation_config.json"])
    assert not (out / "preprocessor_config.json").exists()
    assert json.loads((out / "tokenizer_config.json").read_text()) == \
        json.loads((jax_folder / "tokenizer_config.json").read_text())
    again = convert_to_jax(out, tmp_path / "again", dtype=None)
    assert load_tokenizer(again).chat_template == QWQ_CHAT_TEMPLATE


def test_refusals_leave_nothing(jax_folder, tmp_path):
    config, params = load_hf(convert_to_hf(jax_folder, tmp_path / "plain", "hf"))
    with pytest.raises(ConversionError, match="use_thumbnail"):
        save_hf(config.replace(use_thumbnail=False), params, tmp_path / "a", "hf")
    # one tile never gets a thumbnail: the processor can express that
    one = save_hf(config.replace(use_thumbnail=False, max_dynamic_patch=1), params,
                  tmp_path / "one", "hf")
    assert json.loads((one / "preprocessor_config.json").read_text())["max_patches"] == 1
    one_tile = config.replace(dynamic_image_size=False, use_thumbnail=False)
    fixed = save_hf(one_tile, params, tmp_path / "fixed", "hf")
    assert json.loads((fixed / "preprocessor_config.json").read_text())["max_patches"] == 1
    with pytest.raises(ConversionError, match="<IMG_CONTEXT> id 100, the model config "
                                              "image_token_id 5"):
        save_hf(config.replace(image_token_id=5), params, tmp_path / "b", "hf",
                tokenizer_dir=jax_folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixed", "one", "plain"]


def test_cli_relative_paths_and_generate_without_tokenizer(release, tmp_path, monkeypatch,
                                                           capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rel").symlink_to(release)
    assert cli_main(["convert", "to-jax", "rel", "jax", "--dtype", "keep"]) == 0
    Image.new("RGB", (56, 28), (200, 30, 30)).save("red.png")
    code = cli_main(["generate", "--ckpt", "jax", "--image", "red.png", "--question",
                     "How many?", "--max-new-tokens", "3", "--temperature", "0"])
    assert code == 0, capsys.readouterr().err
    assert "=== answer ===" in capsys.readouterr().out
    assert cli_main(["convert", "to-hf", "jax", "hf", "--layout", "hf"]) == 0
    assert (tmp_path / "hf" / "preprocessor_config.json").is_file()
