import numpy as np
import pytest

from r1v2_jax.data import prompts as P
from r1v2_jax.data.tokenizer import build_demo_tokenizer

WORDS = ["How", "many", "red", "shapes", "Be", "brief", "I", "see", "boxed", "compare"]


@pytest.fixture(scope="module")
def tok():
    return build_demo_tokenizer(WORDS)


def test_prompt_text_exact():
    cfg = P.PromptConfig(system="Be brief.", num_image_token=2)
    text = P.prompt_text("<image>\nHow many red shapes?", [3], cfg)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<img>" + "<IMG_CONTEXT>" * 6 + "</img>\nHow many red shapes?"
        "<|im_end|>\n<|im_start|>assistant\n<think>\n")
    no_system = P.prompt_text("How many?", [], P.PromptConfig())
    assert no_system == "<|im_start|>user\nHow many?<|im_end|>\n<|im_start|>assistant\n<think>\n"
    no_think = P.prompt_text("How many?", [], P.PromptConfig(think_prefix=""))
    assert no_think.endswith("<|im_start|>assistant\n")


def test_each_image_expanded_with_its_own_tiles():
    text = P.expand_image_tags("a <image> b <image> c", [1, 5], num_image_token=3)
    assert text == ("a <img>" + "<IMG_CONTEXT>" * 3 + "</img> b <img>"
                    + "<IMG_CONTEXT>" * 15 + "</img> c")


@pytest.mark.parametrize("question,tiles", [("<image> <image>", [1]), ("none", [2]),
                                            ("<image>", [])])
def test_tag_count_mismatch_is_an_error(question, tiles):
    with pytest.raises(ValueError, match="tag"):
        P.prompt_text(question, tiles)


def test_ensure_image_tags():
    assert P.ensure_image_tags("How many?", 2) == "<image>\n<image>\nHow many?"
    assert P.ensure_image_tags("x <image> y", 1) == "x <image> y"
    assert P.ensure_image_tags("How many?", 0) == "How many?"


def test_encoded_prompt_has_the_image_tokens(tok):
    cfg = P.PromptConfig(num_image_token=4)
    ids = P.encode_prompt(tok, "<image>\ncompare <image>", [2, 5], cfg)
    sp = tok.special
    assert ids.count(sp.img_context) == 4 * (2 + 5)
    assert ids.count(sp.img_start) == ids.count(sp.img_end) == 2
    assert ids[-2:] == [sp.think, tok.token_to_id("\n")]
    first = ids.index(sp.img_start)
    assert ids[first + 1:first + 9] == [sp.img_context] * 8 and ids[first + 9] == sp.img_end
    assert tok.decode(ids) == P.prompt_text("<image>\ncompare <image>", [2, 5], cfg)


def test_training_sequence_masks_only_the_completion(tok):
    cfg = P.PromptConfig(num_image_token=2)
    response = "<think>\nI see 2 red shapes.\n</think>\n\\boxed{2}"
    seq = P.build_training_sequence(tok, "<image>\nHow many red shapes?", [1], response, cfg)
    prompt_ids = P.encode_prompt(tok, "<image>\nHow many red shapes?", [1], cfg)
    completion = tok.encode("I see 2 red shapes.\n</think>\n\\boxed{2}") + [tok.eos_id]
    assert seq.ids.dtype == np.int32 and seq.completion_mask.dtype == np.int32
    np.testing.assert_array_equal(seq.ids, prompt_ids + completion)
    np.testing.assert_array_equal(seq.completion_mask,
                                  [0] * len(prompt_ids) + [1] * len(completion))
    assert seq.prompt_length == len(prompt_ids)
    # the prompt + completion decode back to prompt text + response (opener not doubled)
    assert tok.decode(seq.ids) == P.prompt_text("<image>\nHow many red shapes?", [1], cfg) \
        + response[len("<think>\n"):] + "<|im_end|>"
    no_eos = P.build_training_sequence(tok, "<image>\nHow many red shapes?", [1], response, cfg,
                                       append_eos=False)
    assert len(no_eos.ids) == len(seq.ids) - 1 and no_eos.completion_mask.sum() == len(completion) - 1


def test_response_must_start_with_the_opener(tok):
    with pytest.raises(ValueError, match="opener"):
        P.build_training_sequence(tok, "How many?", [], "\\boxed{2}")
    raw = P.build_training_sequence(tok, "How many?", [], "\\boxed{2}",
                                    P.PromptConfig(think_prefix=""))
    assert raw.completion_mask.sum() == len(tok.encode("\\boxed{2}")) + 1
    assert P.response_of(P.completion_of("<think>\nx</think>y")) == "<think>\nx</think>y"


# ----------------------------------------------------------------------------- chat templates
# A Qwen2.5-style template whose generation prompt stops at "assistant\n" (so the think
# prefix is appended), laid out on indented lines (trim_blocks/lstrip_blocks matter), with
# a passed variable and a loop control.
PLAIN_CHATML = """{% for message in messages %}
    {% if message.role == 'tool' %}{% continue %}{% endif %}
{{ '<|im_start|>' + message.role + '\\n' + message.content + eos_token + '\\n' }}{% endfor %}
{% if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{% endif %}"""


@pytest.fixture(scope="module")
def qwen2_folder(tmp_path_factory):
    pytest.importorskip("transformers")
    from tests.hf_fixtures import make_qwen2_tokenizer

    return make_qwen2_tokenizer(tmp_path_factory.mktemp("qwen2"))


QUESTIONS = [("<image>\nHow many red circles are there?", [3], "Be brief."),
             ("Compare <image> and <image>: which has more?", [1, 2], None),
             ("How many?", [], "You are a careful assistant.\nCount twice."),
             ("I see 12 red circles.", [], None)]


@pytest.mark.parametrize("question,tiles,system", QUESTIONS)
def test_checkpoint_chat_template_matches_transformers(qwen2_folder, question, tiles, system):
    from transformers import AutoTokenizer

    from r1v2_jax.data.tokenizer import load_tokenizer

    tok = load_tokenizer(qwen2_folder)
    hf = AutoTokenizer.from_pretrained(qwen2_folder)
    assert tok.chat_template == hf.chat_template and "<think>" in tok.chat_template
    user = P.expand_image_tags(question, tiles, num_image_token=4)
    messages = ([] if system is None else [{"role": "system", "content": system}]) \
        + [{"role": "user", "content": user}]
    cfg = P.PromptConfig(system=system, num_image_token=4, chat_template=tok.chat_template)
    # the QwQ template opens the reasoning itself: nothing appended
    expected = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                      return_dict=False)
    assert P.encode_prompt(tok, question, tiles, cfg) == list(expected)
    assert P.prompt_text(question, tiles, cfg).endswith("<|im_start|>assistant\n<think>\n")
    assert list(expected).count(tok.img_context_id) == 4 * sum(tiles)
    # a template without the opener gets think_prefix appended
    plain = P.PromptConfig(system=system, num_image_token=4, chat_template=PLAIN_CHATML)
    expected = hf.apply_chat_template(messages, chat_template=PLAIN_CHATML,
                                      add_generation_prompt=True, tokenize=True,
                                      return_dict=False)
    assert P.encode_prompt(tok, question, tiles, plain) == list(expected) + tok.encode("<think>\n")
    no_think = P.PromptConfig(system=system, num_image_token=4, chat_template=PLAIN_CHATML,
                              think_prefix="")
    assert P.encode_prompt(tok, question, tiles, no_think) == list(expected)


def test_template_training_sequence_and_errors(qwen2_folder):
    from r1v2_jax.data.chat_template import TemplateError, render_chat
    from r1v2_jax.data.tokenizer import load_tokenizer

    tok = load_tokenizer(qwen2_folder)
    cfg = P.PromptConfig(num_image_token=2, chat_template=tok.chat_template)
    response = "<think>\nI see 3.\n</think>\n\\boxed{3}"
    seq = P.build_training_sequence(tok, "<image>\nHow many?", [1], response, cfg)
    assert tok.decode(seq.ids) == P.prompt_text("<image>\nHow many?", [1], cfg) \
        + "I see 3.\n</think>\n\\boxed{3}<|im_end|>"
    with pytest.raises(TemplateError, match="compile"):
        render_chat("{% for m in messages %}", [])
    with pytest.raises(TemplateError, match="only user turns"):
        render_chat("{{ raise_exception('only user turns') }}", [])
    generation = "{% for m in messages %}{% generation %}[{{ m.content }}]{% endgeneration %}" \
                 "{% endfor %}{{ messages | tojson }}"
    assert render_chat(generation, [{"role": "user", "content": "é"}]) == \
        '[é][{"role": "user", "content": "é"}]'
