import dataclasses
import json

import pytest
from PIL import Image

from r1v2_jax.data import records as R
from r1v2_jax.data import synthetic as S
from r1v2_jax.data.image import TilingConfig
from r1v2_jax.data.prompts import PromptConfig, encode_prompt
from r1v2_jax.data.tokenizer import build_demo_tokenizer

TILING = TilingConfig(image_size=28, max_num=4)
PROMPT = PromptConfig(num_image_token=4)
RULES = R.RecordRules(tiling=TILING, prompt=PROMPT)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (56, 56), (200, 10, 10)).save(tmp_path / "img" / "sq.png")  # 2x2+1 tiles
    Image.new("RGB", (56, 28), (10, 10, 200)).save(tmp_path / "img" / "wide.png")  # 1x2+1
    good = (tmp_path / "img" / "sq.png").read_bytes()
    (tmp_path / "img" / "trunc.png").write_bytes(good[:len(good) // 2])
    return tmp_path


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def rec(**kw):
    base = {"images": ["img/sq.png"], "question": "How many red shapes?", "answer": "1",
            "answer_type": "number"}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def test_valid_prompt_records(folder):
    tok = build_demo_tokenizer(S.vocabulary())
    path = write(folder / "d.jsonl", [
        rec(), "",  # blank lines are ignored
        rec(images=["img/sq.png", str(folder / "img" / "wide.png")],
            question="<image> vs <image>: which has more?", answer="A", answer_type="choice",
            meta={"k": 1})])
    out = R.load_prompt_records(path, RULES, tok)
    assert out.skipped == {} and len(out.records) == 2
    a, b = out.records
    assert a.images == (str(folder / "img" / "sq.png"),) and a.num_tiles == (5,)
    assert a.question == "<image>\nHow many red shapes?"  # tag added for the lone image
    assert a.source == f"{path}:1" and b.source == f"{path}:3"
    assert b.num_tiles == (5, 3) and b.meta == {"k": 1}
    assert a.prompt_tokens == len(encode_prompt(tok, a.question, a.num_tiles, PROMPT))
    assert a.prompt_tokens > 4 * 5  # includes the image tokens


@pytest.mark.parametrize("row,field,reason", [
    ('{"images": [', "<line>", "bad_json"),
    ("[1, 2]", "<line>", "bad_json"),
    (rec(answer=""), "answer", "empty_answer"),
    (rec(answer="   "), "answer", "empty_answer"),
    (rec(answer=None), "answer", "missing_field"),
    (rec(answer=3), "answer", "bad_type"),
    (rec(answer_type="float"), "answer_type", "bad_answer_type"),
    (rec(anwser="1"), "anwser", "unknown_field"),
    (rec(images=["img/none.png"]), "images[0]", "image_missing"),
    (rec(images=["img/trunc.png"]), "images[0]", "image_corrupt"),
    (rec(images="img/sq.png"), "images", "bad_type"),
    (rec(question="<image> and <image>"), "question", "image_tags"),
])
def test_invalid_records_name_file_line_and_field(folder, row, field, reason):
    path = write(folder / "bad.jsonl", [rec(), row])
    with pytest.raises(R.RecordError) as info:
        R.load_prompt_records(path, RULES)
    assert f"bad.jsonl:2: field '{field}'" in str(info.value)
    assert info.value.reason == reason
    skipping = R.load_prompt_records(path, R.RecordRules(TILING, PROMPT, on_invalid="skip"))
    assert len(skipping.records) == 1 and skipping.skipped == {reason: 1}
    assert skipping.skip_messages[0].startswith(f"{path}:2")


def test_token_budget(folder):
    tok = build_demo_tokenizer(S.vocabulary())
    path = write(folder / "d.jsonl", [rec(), rec(images=[])])
    n_img = R.load_prompt_records(path, RULES, tok).records[0].prompt_tokens
    n_txt = R.load_prompt_records(path, RULES, tok).records[1].prompt_tokens
    assert n_img == n_txt + 4 * 5 + 2 + 1  # image tokens, <img></img>, "\n" after the tag
    tight = R.RecordRules(TILING, PROMPT, max_prompt_tokens=n_img - 1)
    with pytest.raises(R.RecordError, match=f"d.jsonl:1: field 'question'.*{n_img} tokens"):
        R.load_prompt_records(path, tight, tok)
    at_limit = R.RecordRules(TILING, PROMPT, max_prompt_tokens=n_img)
    assert len(R.load_prompt_records(path, at_limit, tok).records) == 2
    with pytest.raises(ValueError, match="no tokenizer"):
        R.load_prompt_records(path, tight)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        R.load_prompt_records(folder / "missing.jsonl")
    with pytest.raises(ValueError, match="on_invalid"):
        R.RecordRules(on_invalid="ignore")


def test_preference_records(folder):
    tok = build_demo_tokenizer(S.vocabulary())
    good = {"images": ["img/sq.png"], "prompt": "How many red shapes?",
            "chosen": "<think>\nI see a red square.\n</think>\n\\boxed{1}",
            "rejected": "<think>\nI see a blue circle.\n</think>\n\\boxed{2}",
            "chosen_score": 1, "rejected_score": -0.5}
    path = write(folder / "p.jsonl", [good, {k: v for k, v in good.items() if "score" not in k}])
    out = R.load_preference_records(path, RULES, tok)
    a, b = out.records
    assert (a.chosen_score, a.rejected_score) == (1.0, -0.5)
    assert (b.chosen_score, b.rejected_score) == (None, None)
    assert a.prompt == "<image>\nHow many red shapes?" and a.num_tiles == (5,)
    cases = [({"rejected": good["chosen"]}, "rejected", "identical_pair"),
             ({"chosen": ""}, "chosen", "empty_chosen"),
             ({"chosen": "\\boxed{1}"}, "chosen", "bad_response"),
             ({"chosen_score": "high"}, "chosen_score", "bad_type"),
             ({"rejected_score": float("nan")}, "rejected_score", "bad_type"),
             ({"prompt": " "}, "prompt", "empty_prompt")]
    for change, field, reason in cases:
        path = write(folder / "p.jsonl", [{**good, **change}])
        with pytest.raises(R.RecordError, match=f"p.jsonl:1: field '{field}'") as info:
            R.load_preference_records(path, RULES, tok)
        assert info.value.reason == reason
    long = R.RecordRules(TILING, PROMPT, max_completion_tokens=5)
    path = write(folder / "p.jsonl", [good])
    with pytest.raises(R.RecordError, match="field 'chosen'.*budget 5"):
        R.load_preference_records(path, long, tok)


def test_synthetic_records_load(tmp_path):
    ds = S.make_dataset(1, 20)
    path = S.write_records(ds.train, str(tmp_path), "train")
    out = R.load_prompt_records(path, R.RecordRules(TilingConfig(image_size=28), PROMPT))
    assert [r.answer for r in out.records] == [e.question.answer for e in ds.train]
    assert all(r.num_tiles == (5,) for r in out.records)


def test_each_epoch_is_a_permutation_and_epochs_differ():
    records = list(range(10))
    orders = [R.epoch_order(10, 0, e) for e in range(3)]
    assert all(sorted(o) == records for o in orders)
    assert len(set(orders)) == 3
    batch, state = R.next_batch(records, 25, R.DataState(), seed=0)
    assert batch == list(orders[0]) + list(orders[1]) + list(orders[2][:5])
    assert state == R.DataState(epoch=2, index=5)
    assert R.epoch_order(10, 1, 0) != orders[0]  # the seed matters


def test_resume_continues_exactly():
    records = [f"r{i}" for i in range(7)]
    full, state = R.next_batch(records, 30, R.DataState(), seed=5)
    for stop in (0, 3, 7, 11, 29):
        head, mid = R.next_batch(records, stop, R.DataState(), seed=5) if stop else ([], R.DataState())
        saved = json.loads(json.dumps(mid.to_dict()))  # as a checkpoint would store it
        tail, end = R.next_batch(records, 30 - stop, R.DataState.from_dict(saved), seed=5)
        assert head + tail == full and end == state
    stream = R.iterate(records, seed=5)
    got = [next(stream) for _ in range(9)]
    assert [r for r, _ in got] == full[:9]
    resumed = R.iterate(records, seed=5, state=got[3][1])
    assert [next(resumed)[0] for _ in range(5)] == full[4:9]
    with pytest.raises(ValueError, match="no records"):
        R.next_batch([], 1, R.DataState(), 0)
    with pytest.raises(ValueError, match="does not fit 7 records"):
        R.next_batch(records, 1, R.DataState(epoch=1, index=8), 0)


@pytest.mark.parametrize("answer,answer_type,fragment", [
    ("three", "number", "not a number"),
    ("nan", "number", "not a number"),
    ("42", "choice", "not one of the letters"),
    ("K", "choice", "not one of the letters"),  # beyond the configured letters A-J
    ("\\frac{", "math", "cannot be parsed"),
    ("9^{9^{9^{9}}}", "number", "reading it took over 1 s"),  # math-verify's alarm stops it
])
def test_gold_answers_are_read_for_their_type_at_load_time(folder, answer, answer_type, fragment):
    path = write(folder / "g.jsonl", [rec(), rec(answer=answer, answer_type=answer_type)])
    rules = R.RecordRules(TILING, PROMPT, gold_parse_timeout_s=1)
    with pytest.raises(R.RecordError, match=f"g.jsonl:2: field 'answer': .*{fragment}") as info:
        R.load_prompt_records(path, rules)
    assert info.value.reason == "bad_answer"
    skipping = R.load_prompt_records(path, dataclasses.replace(rules, on_invalid="skip"))
    assert len(skipping.records) == 1 and skipping.skipped == {"bad_answer": 1}


def test_readable_golds_of_every_type_load(folder):
    rows = [rec(answer="1,000", answer_type="number"), rec(answer="\\frac{1}{3}", answer_type="number"),
            rec(answer="(C)", answer_type="choice"), rec(answer="x^2+1", answer_type="math"),
            rec(answer="$\\dfrac{1}{2}$", answer_type="math"), rec(answer="Blue whale", answer_type="text")]
    out = R.load_prompt_records(write(folder / "g.jsonl", rows), RULES)
    assert [r.answer for r in out.records] == [r["answer"] for r in rows]


def test_non_utf8_line_names_file_and_line(folder):
    path = folder / "enc.jsonl"
    path.write_bytes(json.dumps(rec()).encode() + b"\n" + b'{"question": "caf\xe9?"}\n'
                     + json.dumps(rec(answer="2")).encode() + b"\n")
    with pytest.raises(R.RecordError, match="enc.jsonl:2: field '<line>': not UTF-8") as info:
        R.load_prompt_records(path, RULES)
    assert info.value.reason == "bad_encoding"
    skipping = R.load_prompt_records(path, R.RecordRules(TILING, PROMPT, on_invalid="skip"))
    assert [r.answer for r in skipping.records] == ["1", "2"]
    assert skipping.skipped == {"bad_encoding": 1}


def test_a_file_without_valid_records_is_an_error(folder):
    for rows in ([], ["", "  "]):
        path = write(folder / "empty.jsonl", rows)
        with pytest.raises(R.RecordError, match="empty.jsonl: no valid records .*holds no records"):
            R.load_prompt_records(path, RULES)
    path = write(folder / "bad.jsonl", [rec(answer=""), "{"])
    with pytest.raises(R.RecordError, match=r"all 2 record\(s\) are invalid"):
        R.load_prompt_records(path, R.RecordRules(TILING, PROMPT, on_invalid="skip"))


@pytest.mark.parametrize("which", ["demo", "qwen2"])
def test_prompt_token_count_equals_the_encoded_prompt(which, tmp_path):
    """The prevalidation counts image placeholders without encoding them (records.py
    `_count_prompt_tokens`); the count must be len(encode_prompt(...)) exactly."""
    from r1v2_jax.data import synthetic
    from r1v2_jax.data.prompts import encode_prompt
    from r1v2_jax.data.records import _count_prompt_tokens
    from r1v2_jax.data.tokenizer import build_demo_tokenizer, load_tokenizer
    from tests.hf_fixtures import make_qwen2_tokenizer

    tok = (build_demo_tokenizer(synthetic.vocabulary()) if which == "demo"
           else load_tokenizer(make_qwen2_tokenizer(tmp_path / "tok")))
    assert tok.image_context_is_atomic
    cases = [("<image>\nHow many red shapes?", [13]), ("Compare <image> and<image>!", [1, 4]),
             ("no image at all, 2 + 2 = ?", []), ("<image>", [2])]
    for system in (None, "Be brief."):
        for num_image_token in (1, 3, 256):
            prompt = PromptConfig(num_image_token=num_image_token, system=system,
                                  chat_template=tok.chat_template)
            for question, tiles in cases:
                want = len(encode_prompt(tok, question, tiles, prompt))
                assert _count_prompt_tokens(question, tiles, prompt, tok) == want, (
                    question, tiles, num_image_token, system)
