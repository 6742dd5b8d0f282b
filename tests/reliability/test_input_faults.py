"""Bad records and bad options through the real CLI (subprocesses): `filter-prompts` with
records that are not UTF-8, golds that cannot be read for their answer_type, an empty
file, an unwritable --output; `generate` with invalid sampling values. Each is one line
`r1v2 <command>: error: ...` naming the file:line or option, exit status 2, before any
rollout (and, for options and paths, before the policy is even loaded)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from r1v2_jax.convert import save_jax_checkpoint
from r1v2_jax.data.tokenizer import build_demo_tokenizer
from tests.reliability._cli import REPO, assert_user_error, run_cli
from tests.reliability.conftest import random_tree, tiny_config

GOOD = {"images": [], "question": "how many circles", "answer": "3", "answer_type": "number"}


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    """A tiny JAX checkpoint with a matching tokenizer, and the override arguments that
    point the demo recipe at it."""
    root = tmp_path_factory.mktemp("policy")
    tokenizer = build_demo_tokenizer(["how", "many", "circles", "the", "answer", "is"])
    config = tiny_config(vocab_size=tokenizer.vocab_size, image_token_id=tokenizer.img_context_id)
    save_jax_checkpoint(config, random_tree(config), root / "ckpt")
    tokenizer.save(root / "tokenizer.json")
    return root, [f"--config.init.checkpoint={root / 'ckpt'}",
                  f"--config.tokenizer={root / 'tokenizer.json'}", "--config.data.max_prompt_tokens=512"]


def _filter(policy, records: Path, output: Path, *extra):
    root, overrides = policy
    return run_cli(["filter-prompts", "--config", REPO / "configs" / "grpo_demo.py", "--input",
                    records, "--output", output, *extra, *overrides])


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


@pytest.mark.parametrize("line2,fragments", [
    (b'{"images": [], "question": "caf\xe9?", "answer": "1", "answer_type": "number"}',
     [":2: field '<line>': not UTF-8"]),
    (json.dumps({**GOOD, "answer": "three"}).encode(), [":2: field 'answer'", "'three' is not a number"]),
    (json.dumps({**GOOD, "answer": "42", "answer_type": "choice"}).encode(),
     [":2: field 'answer'", "'42' is not one of the letters"]),
    (json.dumps({**GOOD, "answer": "\\frac{", "answer_type": "math"}).encode(),
     [":2: field 'answer'", "cannot be parsed by math-verify"]),
], ids=["non-utf8", "three-as-number", "42-as-choice", "frac-as-math"])
def test_bad_record_is_one_line_naming_file_and_line(policy, tmp_path, line2, fragments):
    records = _write(tmp_path / "prompts.jsonl", [json.dumps(GOOD).encode(), line2])
    result = _filter(policy, records, tmp_path / "kept.jsonl")
    assert_user_error(result, "filter-prompts", f"{records}:2", *fragments)
    assert not (tmp_path / "kept.jsonl").exists()


def test_empty_records_file_is_a_clear_error(policy, tmp_path):
    records = _write(tmp_path / "prompts.jsonl", [b"", b"   "])
    result = _filter(policy, records, tmp_path / "kept.jsonl")
    assert_user_error(result, "filter-prompts", f"{records}: no valid records", "holds no records")


@pytest.mark.parametrize("output,extra,fragment", [
    ("missing/kept.jsonl", [], "does not exist"),
    (".", [], "is a folder"),
    ("prompts.jsonl", [], "is the input file"),
    ("kept.jsonl", ["-k", "1"], "-k must be >= 2"),
], ids=["no-folder", "a-folder", "the-input", "k-1"])
def test_output_and_options_are_checked_before_the_policy_loads(policy, tmp_path, output, extra, fragment):
    records = _write(tmp_path / "prompts.jsonl", [json.dumps(GOOD).encode()])
    result = _filter(policy, records, tmp_path / output, *extra)
    assert_user_error(result, "filter-prompts", fragment)
    assert "loaded" not in result.stdout  # build_policy's log line: nothing was loaded


@pytest.mark.parametrize("option,value,expected", [
    ("--temperature", "nan", "a number >= 0 (0 = greedy)"),
    ("--temperature", "-0.5", "a number >= 0 (0 = greedy)"),
    ("--temperature", "inf", "a number >= 0 (0 = greedy)"),
    ("--top-p", "0", "a number in (0, 1]"),
    ("--top-p", "1.5", "a number in (0, 1]"),
    ("--top-k", "-1", "an integer >= 0"),
    ("--max-new-tokens", "0", "an integer >= 1"),
    ("--max-tiles", "0", "an integer >= 1"),
])
def test_generate_refuses_invalid_sampling_values(tmp_path, option, value, expected):
    # --ckpt does not exist: the option must be refused before anything is loaded
    result = run_cli(["generate", "--ckpt", tmp_path / "none", "--question", "how many",
                      option, value], timeout=60)
    assert_user_error(result, "generate", f"argument {option}: expected {expected}, got '{value}'")


def _patch(part, key, value):
    def edit(raw):
        raw[part][key] = value
        return raw
    return edit


@pytest.mark.parametrize("edit,fragment", [
    (lambda raw: [raw], "invalid model config"),
    (_patch("vision", "patch_size", 0), "field 'vision.patch_size' is 0; expected a positive integer"),
    (_patch("text", "num_attention_heads", 0), "field 'text.num_attention_heads' is 0"),
    (_patch("text", "num_hidden_layers", 10**9), "the config implies [1000000000,"),
], ids=["list", "zero-patch", "zero-heads", "1e9-layers"])
def test_generate_refuses_a_bad_checkpoint_config(policy, tmp_path, edit, fragment):
    ckpt = Path(shutil.copytree(policy[0] / "ckpt", tmp_path / "ckpt"))
    file = ckpt / "model_config.json"
    file.write_text(json.dumps(edit(json.loads(file.read_text()))))
    result = run_cli(["generate", "--ckpt", ckpt, "--tokenizer", policy[0] / "tokenizer.json",
                      "--question", "how many", "--max-new-tokens", "2"], timeout=90)
    assert_user_error(result, "generate", str(ckpt), fragment)
