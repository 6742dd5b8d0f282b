"""`r1v2 generate`: checkpoint + tokenizer + image -> prompt -> generation -> split answer."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from r1v2_jax import cli
from r1v2_jax.convert import save_jax_checkpoint
from r1v2_jax.data.tokenizer import build_demo_tokenizer
from r1v2_jax.generate import chat
from r1v2_jax.generate.api import GenerationOutput
from r1v2_jax.models import TextConfig, VisionConfig, VLMConfig
from tests.generate.conftest import random_params

WORDS = ["how", "many", "circles", "the", "answer", "is", "be", "brief"]


def test_split_reasoning():
    assert chat.split_reasoning("I count.\n</think>\n\n3 circles") == ("I count.", "3 circles")
    assert chat.split_reasoning("a</think>b</think>c") == ("a", "b</think>c")
    assert chat.split_reasoning("still thinking") == ("still thinking", "")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random tiny model saved as a JAX checkpoint folder with a demo tokenizer."""
    folder = tmp_path_factory.mktemp("ckpt")
    tokenizer = build_demo_tokenizer(WORDS)
    config = VLMConfig(
        vision=VisionConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, image_size=28, patch_size=7),
        text=TextConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                        num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=8),
        image_token_id=tokenizer.img_context_id, force_image_size=28, max_dynamic_patch=2)
    save_jax_checkpoint(config, random_params(config), folder)
    tokenizer.save(folder / "tokenizer.json")
    image = folder / "shapes.png"
    Image.new("RGB", (56, 28), (200, 30, 30)).save(image)  # 2:1 -> 2 tiles + thumbnail
    return folder, image, tokenizer, config


def test_prompt_and_answer_plumbing(checkpoint, monkeypatch, capsys):
    folder, image, tokenizer, config = checkpoint
    seen = {}
    reply = tokenizer.encode("the answer is</think> 3") + [tokenizer.eos_id]

    def fake_generate(config_, params, input_ids, pixel_values, **kw):
        seen.update(ids=np.asarray(input_ids)[0], pixels=pixel_values, **kw)
        tokens = np.full((1, kw["max_new_tokens"]), kw["pad_token_id"], np.int32)
        tokens[0, :len(reply)] = reply
        return GenerationOutput(tokens, np.zeros(tokens.shape, np.float32),
                                np.array([len(reply)]), np.array([False]))

    monkeypatch.setattr(chat, "generate", fake_generate)
    code = cli.main(["generate", "--ckpt", str(folder), "--image", str(image), "--question",
                     "how many circles", "--system", "be brief", "--max-new-tokens", "16"])
    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        "=== reasoning ===", "the answer is", "=== answer ===", "3"]
    prompt = tokenizer.decode(seen["ids"])
    assert prompt.startswith("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\n<img>")
    assert prompt.endswith("how many circles<|im_end|>\n<|im_start|>assistant\n<think>\n")
    assert seen["pixels"].shape == (3, 28, 28, 3)  # 2 tiles + thumbnail
    assert (seen["ids"] == config.image_token_id).sum() == 3 * config.num_image_tokens
    assert seen["eos_token_id"] == (tokenizer.eos_id, tokenizer.pad_id)
    assert (seen["temperature"], seen["top_p"]) == (0.6, 0.95)


def test_generate_command_runs_end_to_end(checkpoint, capsys):
    folder, image, tokenizer, config = checkpoint
    args = ["generate", "--ckpt", str(folder), "--image", str(image), "--question",
            "how many circles", "--temperature", "0", "--max-new-tokens", "6"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "=== reasoning ===" and "=== answer ===" in out
    from r1v2_jax.convert import load_jax_checkpoint
    loaded_config, params = load_jax_checkpoint(folder)
    direct = chat.answer_question(loaded_config, params, tokenizer, "how many circles", image,
                                  options=chat.SamplingOptions(temperature=0.0,
                                                               max_new_tokens=6))
    assert out[1:out.index("=== answer ===")] == direct.reasoning.splitlines()
    assert 1 <= direct.num_tokens <= 6


def test_tokenizer_must_match_the_image_token(checkpoint):
    folder, image, tokenizer, config = checkpoint
    wrong = config.replace(image_token_id=config.image_token_id + 1)
    with pytest.raises(ValueError, match="image_token_id"):
        chat.answer_question(wrong, None, tokenizer, "how many", image)


def test_bad_input_is_a_one_line_error(checkpoint, tmp_path, capsys):
    folder, image, tokenizer, config = checkpoint
    assert cli.main(["generate", "--ckpt", str(tmp_path), "--question", "how"]) == 2
    assert "model_config.json: not found" in capsys.readouterr().err
    missing = tmp_path / "nope.png"
    assert cli.main(["generate", "--ckpt", str(folder), "--image", str(missing),
                     "--question", "how"]) == 2
    assert f"image not found: {missing}" in capsys.readouterr().err


def test_sampling_options_flag_then_generation_config_then_chat_default():
    import argparse

    from r1v2_jax.generate.cli import sampling_options

    args = argparse.Namespace(temperature=None, top_p=0.5, top_k=None, repetition_penalty=None,
                              max_new_tokens=None, seed=3)
    options = sampling_options(args, {"top_p": 0.9, "top_k": 11, "temperature": 0.0})
    assert (options.temperature, options.top_p, options.top_k, options.repetition_penalty,
            options.max_new_tokens, options.seed) == (0.0, 0.5, 11, 1.05, 4096, 3)
