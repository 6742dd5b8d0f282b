"""copy_tokenizer_files: what it copies, what it refuses, and gs:// through etils.epath."""

import pytest
from etils import epath

from r1v2_jax.convert import ConversionError
from r1v2_jax.convert.tokenizer_files import TOKENIZER_FILES, copy_tokenizer_files
from r1v2_jax.data.tokenizer import build_demo_tokenizer, load_tokenizer
from tests.hf_fixtures import make_qwen2_tokenizer

SENTENCE = "<|im_start|>user\nHow many red circles?<|im_end|>\n<think>\n"


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    return make_qwen2_tokenizer(tmp_path_factory.mktemp("tok"))


def test_copies_every_tokenizer_file_and_only_those(qwen2, tmp_path):
    (tmp_path / "src").mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "added_tokens.json"):
        (tmp_path / "src" / name).write_bytes((qwen2 / name).read_bytes())
    (tmp_path / "src" / "config.json").write_text("{}")  # not a tokenizer file
    (tmp_path / "src" / "merges.txt").write_text("#version: 0.2\n")
    (tmp_path / "dst").mkdir()
    written = copy_tokenizer_files(tmp_path / "src", tmp_path / "dst")
    assert written == ["tokenizer.json", "tokenizer_config.json", "added_tokens.json",
                       "merges.txt"]  # TOKENIZER_FILES order
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == sorted(written)
    for name in written:
        assert (tmp_path / "dst" / name).read_bytes() == (tmp_path / "src" / name).read_bytes()
    tok = load_tokenizer(tmp_path / "dst")
    assert tok.encode(SENTENCE) == load_tokenizer(qwen2).encode(SENTENCE)
    assert tok.chat_template is not None
    assert set(written) <= set(TOKENIZER_FILES)


def test_refusals_and_optional(qwen2, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "dst").mkdir()
    with pytest.raises(ConversionError, match="no tokenizer files"):
        copy_tokenizer_files(tmp_path / "empty", tmp_path / "dst")
    assert copy_tokenizer_files(tmp_path / "empty", tmp_path / "dst", required=False) == []
    with pytest.raises(ConversionError, match="destination folder does not exist"):
        copy_tokenizer_files(qwen2, tmp_path / "nowhere")
    with pytest.raises(ConversionError, match="no such tokenizer"):
        copy_tokenizer_files(tmp_path / "missing", tmp_path / "dst")
    (tmp_path / "dst" / "tokenizer.json").write_text("other")
    with pytest.raises(ConversionError, match="already has tokenizer.json; refusing"):
        copy_tokenizer_files(qwen2, tmp_path / "dst")
    assert (tmp_path / "dst" / "tokenizer.json").read_text() == "other"
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["tokenizer.json"]


def test_a_lone_tokenizers_file_becomes_tokenizer_json(tmp_path, monkeypatch):
    demo = build_demo_tokenizer(["How", "many"])
    demo.save(tmp_path / "demo-tok.json")
    (tmp_path / "final").mkdir()
    monkeypatch.chdir(tmp_path)  # relative paths too
    assert copy_tokenizer_files("demo-tok.json", "final") == ["tokenizer.json"]
    assert load_tokenizer(tmp_path / "final").encode("How many") == demo.encode("How many")


def test_to_and_from_gcs(qwen2, tmp_path, gcs_in_memory):
    bucket = epath.Path("gs://bucket/run/final")
    bucket.mkdir(parents=True)
    written = copy_tokenizer_files(qwen2, bucket)
    assert written == ["tokenizer.json", "tokenizer_config.json", "added_tokens.json"]
    assert (bucket / "tokenizer.json").read_bytes() == (qwen2 / "tokenizer.json").read_bytes()
    (tmp_path / "back").mkdir()
    assert copy_tokenizer_files("gs://bucket/run/final", tmp_path / "back") == written
    assert load_tokenizer(tmp_path / "back").encode(SENTENCE) == \
        load_tokenizer(qwen2).encode(SENTENCE)
