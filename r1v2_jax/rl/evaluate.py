"""Held-out evaluation: responses scored by the same reward rules as training.

One core for the trainers' held-out evaluation and `r1v2 eval`: `collect` decodes and
scores (`rollout`), `greedy_metrics` / `sampled_metrics` reduce the groups.
`evaluate` decodes greedily (pass@1, the demo's headline accuracy); `evaluate_sampled`
draws k responses per prompt at a temperature and reports their mean accuracy (avg@k)
and pass@k; `evaluate_report` does both, by answer type, and writes every response.
Side by side they show what RL changed: sharpening (sampled accuracy rises towards the
greedy one while pass@k falls) versus a better policy (greedy accuracy rises).
`answer_prior_accuracy` is the blind baseline: the commonest training answer per question.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter, defaultdict
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from etils import epath

from r1v2_jax.data.prompts import PromptConfig
from r1v2_jax.data.tokenizer import Tokenizer
from r1v2_jax.rl.answers import AnswerCheckConfig, answer_region, extract_final_answer
from r1v2_jax.rl.examples import PromptExample
from r1v2_jax.rl.rollout import Sample, SamplingOptions, rollout

ITEMS_FILE, SUMMARY_FILE = "items.jsonl", "summary.json"


def _scored_groups(config, params, examples: Sequence[PromptExample], options: SamplingOptions,
                   *, tokenizer: Tokenizer, prompt: PromptConfig, batch_size: int, seed: int,
                   score: Callable[..., dict[str, Any]]) -> Iterator[list[Sample]]:
    for i in range(0, len(examples), batch_size):
        chunk = list(examples[i:i + batch_size])
        # keep the batch shape fixed so evaluation compiles once
        padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
        groups = rollout(config, params, padded, options, tokenizer=tokenizer, prompt=prompt,
                         seed=seed, policy_version=0, score=score)
        yield from groups[:len(chunk)]


def collect(config, params, examples: Sequence[PromptExample], options: SamplingOptions, *,
            tokenizer: Tokenizer, prompt: PromptConfig, batch_size: int, seed: int,
            score: Callable[..., dict[str, Any]]) -> list[list[Sample]]:
    """options.num_samples scored responses per example, in example order. `batch_size`
    counts decoded rows: about batch_size / num_samples prompts per call (at least 1)."""
    if options.num_samples < 1:
        raise ValueError(f"evaluation needs num_samples >= 1, got {options.num_samples}")
    per_call = max(batch_size // options.num_samples, 1)
    return list(_scored_groups(config, params, examples, options, tokenizer=tokenizer,
                               prompt=prompt, batch_size=per_call, seed=seed, score=score))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. 2021 from n samples of which c are correct:
    1 - C(n - c, k) / C(n, k), as the numerically stable product. n == k: any correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def _correct(s: Sample) -> bool:
    return s.accuracy >= 1.0


def greedy_metrics(groups: Sequence[Sequence[Sample]]) -> dict[str, float]:
    """accuracy, format rate, hallucination rate and length of each group's first response."""
    first = [g[0] for g in groups]
    return {"eval_accuracy": float(np.mean([s.accuracy for s in first])),
            "eval_format_rate": float(np.mean([s.format for s in first])),
            "eval_hallucination_rate": float(np.mean([float(s.hallucinated) for s in first])),
            "eval_response_len": float(np.mean([len(s.completion_ids) for s in first]))}


def sampled_metrics(groups: Sequence[Sequence[Sample]], k: int) -> dict[str, float]:
    """eval_sampled_accuracy (avg@k) = mean over prompts and samples of the accuracy reward;
    eval_pass_at_k = mean over prompts of `pass_at_k(n, correct, k)` (n = samples per prompt)."""
    accs = np.asarray([[s.accuracy for s in g] for g in groups], np.float64)
    passes = [pass_at_k(len(g), sum(map(_correct, g)), k) for g in groups]
    return {"eval_sampled_accuracy": float(accs.mean()), "eval_pass_at_k": float(np.mean(passes)),
            "eval_num_samples": float(k)}


def _check_sampling(num_samples: int, temperature: float) -> None:
    if num_samples < 1 or not temperature > 0:
        raise ValueError(f"sampled evaluation needs k >= 1 and temperature > 0, got "
                         f"{num_samples} and {temperature}")


def evaluate(config, params, examples: Sequence[PromptExample], *, tokenizer: Tokenizer,
             prompt: PromptConfig, max_new_tokens: int, batch_size: int,
             score: Callable[[PromptExample, str], dict[str, Any]]) -> dict[str, float]:
    """accuracy, format rate and hallucination rate of greedy decoding (pass@1)."""
    options = SamplingOptions(num_samples=1, max_new_tokens=max_new_tokens, temperature=0.0)
    return greedy_metrics(collect(config, params, examples, options, tokenizer=tokenizer,
                                  prompt=prompt, batch_size=batch_size, seed=0, score=score))


def evaluate_sampled(config, params, examples: Sequence[PromptExample], *, tokenizer: Tokenizer,
                     prompt: PromptConfig, max_new_tokens: int, batch_size: int,
                     num_samples: int, temperature: float, seed: int = 0,
                     score: Callable[..., dict[str, Any]]) -> dict[str, float]:
    """k = num_samples responses per prompt at `temperature`: `sampled_metrics`."""
    _check_sampling(num_samples, temperature)
    options = SamplingOptions(num_samples=num_samples, max_new_tokens=max_new_tokens,
                              temperature=temperature)
    return sampled_metrics(collect(config, params, examples, options, tokenizer=tokenizer,
                                   prompt=prompt, batch_size=batch_size, seed=seed, score=score),
                           num_samples)


# ----------------------------------------------------------------------------- report
def extracted_answer(response: str, answer_type: str,
                     cfg: AnswerCheckConfig = AnswerCheckConfig()) -> str | None:
    """The final answer the rule judge compares (`rl/answers.py`), None when it finds none."""
    region = answer_region(response, cfg.require_think_close)
    found = None if region is None else extract_final_answer(region, answer_type,
                                                             cfg.choice_letters)
    return None if found is None else found[0]


def _response_record(s: Sample, answer_type: str) -> dict[str, Any]:
    return {"response": s.response, "extracted": extracted_answer(s.response, answer_type),
            "accuracy": s.accuracy, "format": s.format, "reward": s.reward,
            "hallucinated": s.hallucinated, "truncated": s.truncated,
            "num_tokens": int(len(s.completion_ids))}


def _write_atomic(path: epath.Path, text: str) -> None:
    """Write to a temporary sibling, then rename: a reader never sees half a file."""
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
    tmp.write_text(text)
    tmp.replace(path)


def evaluate_report(config, params, examples: Sequence[PromptExample], *, tokenizer: Tokenizer,
                    prompt: PromptConfig, score: Callable[..., dict[str, Any]],
                    max_new_tokens: int, batch_size: int, k: int, temperature: float,
                    top_p: float, seed: int, out_dir: str | None = None) -> dict[str, Any]:
    """Greedy accuracy (eval_accuracy, + format/hallucination rate, length), avg@k
    (eval_sampled_accuracy) and pass@k (eval_pass_at_k) of k samples at `temperature` /
    `top_p` (k = 0: greedy only), overall and under "by_answer_type". With `out_dir`
    (local path or any etils.epath URL) writes out_dir/items.jsonl (one line per example:
    question, gold answer, answer type, greedy and sampled responses with extracted answers
    and scores) and out_dir/summary.json (the returned dict), each atomically."""
    if not examples:
        raise ValueError("evaluate_report: no examples to evaluate")
    if k:
        _check_sampling(k, temperature)
    run = dict(tokenizer=tokenizer, prompt=prompt, batch_size=batch_size, score=score)
    greedy = collect(config, params, examples,
                     SamplingOptions(num_samples=1, max_new_tokens=max_new_tokens,
                                     temperature=0.0), seed=0, **run)
    sampled = collect(config, params, examples,
                      SamplingOptions(num_samples=k, max_new_tokens=max_new_tokens,
                                      temperature=temperature, top_p=top_p),
                      seed=seed, **run) if k else None

    def metrics(idx: Sequence[int]) -> dict[str, float]:
        out = {"num_items": len(idx), **greedy_metrics([greedy[i] for i in idx])}
        if sampled is not None:
            out.update(sampled_metrics([sampled[i] for i in idx], k))
        return out

    by_type: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        by_type[e.answer_type].append(i)
    summary = {**metrics(range(len(examples))),
               "by_answer_type": {t: metrics(idx) for t, idx in sorted(by_type.items())},
               "settings": {"k": k, "temperature": temperature, "top_p": top_p, "seed": seed,
                            "max_new_tokens": max_new_tokens}}
    if out_dir is not None:
        lines = []
        for i, e in enumerate(examples):
            samples = sampled[i] if sampled is not None else []
            item = {"uid": e.uid, "question": e.question, "answer": e.answer,
                    "answer_type": e.answer_type,
                    "greedy": _response_record(greedy[i][0], e.answer_type),
                    "samples": [_response_record(s, e.answer_type) for s in samples]}
            if samples:
                item["pass_at_k"] = pass_at_k(len(samples), sum(map(_correct, samples)), k)
            lines.append(json.dumps(item, ensure_ascii=False))
        out = epath.Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _write_atomic(out / ITEMS_FILE, "".join(line + "\n" for line in lines))
        _write_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary


def answer_prior_accuracy(train: Sequence[PromptExample], heldout: Sequence[PromptExample]
                          ) -> dict[str, float]:
    """Accuracy of answering without the image: the blind baseline a policy must beat.

    Each held-out question gets the answer most often given to the same question text in
    `train` (to an unseen question: the commonest answer of its answer type; ties go to the
    answer seen first). Exact string match, which the demo's typed answers allow.
    """
    by_question: dict[str, Counter] = defaultdict(Counter)
    by_type: dict[str, Counter] = defaultdict(Counter)
    for e in train:
        by_question[e.question][e.answer.strip()] += 1
        by_type[e.answer_type][e.answer.strip()] += 1
    hits = []
    for e in heldout:
        votes = by_question.get(e.question) or by_type.get(e.answer_type)
        guess = votes.most_common(1)[0][0] if votes else None
        hits.append(guess == e.answer.strip())
    return {"eval_accuracy": float(np.mean(hits)) if hits else float("nan")}
