import pytest
from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as RawTokenizer

from r1v2_jax.data.tokenizer import (SpecialTokenNames, build_demo_tokenizer, from_raw,
                                     load_tokenizer)

WORDS = ["I", "see", "red", "blue", "circle", "circles", "boxed", "How", "many"]
TEXT = ("<|im_start|>user\n<img><IMG_CONTEXT><IMG_CONTEXT></img>\nHow many red circles?"
        "<|im_end|>\n<|im_start|>assistant\n<think>\nI see 12 red circles.\n</think>\n"
        "\\boxed{12}<|im_end|>")


def test_demo_round_trip_and_special_ids():
    tok = build_demo_tokenizer(WORDS)
    ids = tok.encode(TEXT)
    assert tok.decode(ids) == TEXT
    sp = tok.special
    n = SpecialTokenNames()
    for field in ("eos", "pad", "im_start", "img_start", "img_end", "img_context", "think",
                  "end_think"):
        assert tok.token_to_id(getattr(n, field)) == getattr(sp, field)
    assert len({sp.eos, sp.pad, sp.im_start, sp.img_start, sp.img_end, sp.img_context,
                sp.think, sp.end_think}) == 8
    assert ids.count(sp.img_context) == 2 and ids.count(sp.eos) == 2
    assert ids[-1] == tok.eos_id and tok.pad_id == sp.pad
    # digits are single tokens, so "12" is two ids; a space merges into the next digit
    one, two = tok.token_to_id("1"), tok.token_to_id("2")
    assert [one, two] == tok.encode("12")
    assert tok.encode("see 12") == [tok.token_to_id("see"), tok.token_to_id(" 1"), two]
    assert tok.encode("see  red") == [tok.token_to_id("see"), tok.token_to_id(" "),
                                      tok.token_to_id(" red")]
    assert tok.vocab_size < 200
    # special tokens are dropped by skip_special_tokens, think tags are not (as in Qwen)
    assert tok.decode(ids, skip_special_tokens=True).startswith("user\n\nHow many")
    assert "<think>" in tok.decode(ids, skip_special_tokens=True)


def test_demo_unknown_word_is_unk_and_bad_words_rejected():
    tok = build_demo_tokenizer(WORDS)
    unk = tok.token_to_id("<unk>")
    # a word carries the space before it, as in byte-level BPE vocabularies
    assert tok.encode("I see zebras") == [tok.token_to_id("I"), tok.token_to_id(" see"), unk]
    with pytest.raises(ValueError, match="ASCII letters"):
        build_demo_tokenizer(["ok", "two words"])


def test_demo_ids_are_deterministic_and_duplicates_dropped():
    a = build_demo_tokenizer(WORDS)
    b = build_demo_tokenizer(WORDS + ["red", "I"])
    assert a.encode(TEXT) == b.encode(TEXT) and a.vocab_size == b.vocab_size


def test_save_load_json_file_and_folder(tmp_path):
    tok = build_demo_tokenizer(WORDS)
    tok.save(tmp_path / "tokenizer.json")
    for path in (tmp_path / "tokenizer.json", tmp_path):
        again = load_tokenizer(path)
        assert again.encode(TEXT) == tok.encode(TEXT)
        assert again.special == tok.special
        assert again.decode(again.encode(TEXT)) == TEXT


def test_missing_special_token_is_named(tmp_path):
    raw = RawTokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>"))
    raw.add_special_tokens(["<|im_end|>", "<|endoftext|>", "<|im_start|>", "<img>", "</img>"])
    raw.save(str(tmp_path / "t.json"))
    with pytest.raises(ValueError, match="IMG_CONTEXT"):
        load_tokenizer(tmp_path / "t.json")
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        load_tokenizer(tmp_path / "nothing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_tokenizer(tmp_path / "bad.json")
    # think tags are optional: absent -> None
    raw.add_special_tokens(["<IMG_CONTEXT>"])
    assert from_raw(raw).special.think is None


def _tiny_qwen2_style() -> RawTokenizer:
    """Byte-level BPE like Qwen2's, trained offline on a few sentences."""
    raw = RawTokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    raw.train_from_iterator(["How many red circles are there?", "I see 12 blue squares.",
                             "The answer is \\boxed{3}."] * 20, trainer)
    raw.add_special_tokens(["<img>", "</img>", "<IMG_CONTEXT>"])
    raw.add_tokens([AddedToken("<think>", special=False), AddedToken("</think>", special=False)])
    return raw


def test_qwen2_style_folder_through_autotokenizer(tmp_path):
    transformers = pytest.importorskip("transformers")
    raw = _tiny_qwen2_style()
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>",
                                              pad_token="<|endoftext|>")
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer_config.json").exists()
    tok = load_tokenizer(tmp_path)
    assert type(tok.backend).__name__ == "_HFBackend"
    ids = tok.encode(TEXT)
    assert ids == raw.encode(TEXT, add_special_tokens=False).ids
    assert tok.decode(ids) == TEXT
    assert tok.special.eos == raw.token_to_id("<|im_end|>")
    assert tok.special.pad == raw.token_to_id("<|endoftext|>")
    assert tok.special.img_context == raw.token_to_id("<IMG_CONTEXT>")
    assert tok.special.think == raw.token_to_id("<think>")
    assert tok.vocab_size == raw.get_vocab_size(with_added_tokens=True)
    # and it saves back to a folder that loads to the same thing
    tok.save(tmp_path / "copy")
    assert load_tokenizer(tmp_path / "copy").encode(TEXT) == ids


def test_chat_template_of_a_folder_and_none_for_the_demo(tmp_path):
    pytest.importorskip("transformers")
    from tests.hf_fixtures import IMAGE_TOKEN_ID, QWQ_CHAT_TEMPLATE, VOCAB_SIZE, make_qwen2_tokenizer

    assert build_demo_tokenizer(WORDS).chat_template is None
    folder = make_qwen2_tokenizer(tmp_path / "qwen2")
    tok = load_tokenizer(folder)
    assert tok.chat_template == QWQ_CHAT_TEMPLATE  # read from tokenizer_config.json
    assert tok.vocab_size == VOCAB_SIZE and tok.img_context_id == IMAGE_TOKEN_ID
    assert (tok.eos_id, tok.pad_id, tok.special.think) == (2, 1, IMAGE_TOKEN_ID + 1)
    assert tok.decode(tok.encode(TEXT)) == TEXT
    # transformers' newer spelling: the template in chat_template.jinja
    tok.save(tmp_path / "saved")
    assert load_tokenizer(tmp_path / "saved").chat_template == QWQ_CHAT_TEMPLATE
    # a lone tokenizers JSON file with a chat_template.jinja beside it
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "tokenizer.json").write_bytes((folder / "tokenizer.json").read_bytes())
    assert load_tokenizer(lone).chat_template is None
    (lone / "chat_template.jinja").write_text("{{ messages[0].content }}")
    assert load_tokenizer(lone).chat_template == "{{ messages[0].content }}"
