"""Preference pairs for MPO and the reward model.

Two sources:
  * JSONL preference records (`data/records.py`): `load_preference_pairs`;
  * the policy's own samples: n responses per prompt (`rollout`), scored with the hybrid
    reward, best vs worst of each group, kept when the score margin reaches the
    threshold (R1V2's "MPO threshold": 15 was more stable than 10 or 7).

Scores are put on a 0-100 scale before pairing, so the threshold reads as "points out of
100": s = scale * (r - r_min) / (r_max - r_min), where [r_min, r_max] is the range the
hybrid reward can take (`hybrid_reward_range`) or a configured `score_range`. With the
demo weights (w_acc 1, w_fmt 0.5, no RM) a correct well-formed answer scores 100, a
well-formed wrong one 33.3, a malformed wrong one 0.

Pairing rule per group: chosen = the first sample with the highest score, rejected = the
first with the lowest; the pair is kept iff margin = s_chosen - s_rejected is > 0 and
>= threshold and the two completions differ. So ties (margin 0) and all-equal groups
never give a pair, whatever the threshold.

`require_correct_chosen` (mpo.require_correct_chosen, default True; a CHOICE, docs/mpo.md):
the chosen response must have a correct answer (accuracy reward 1). Chosen is then the
first highest-scored *correct* sample, and a group without one gives no pair. Without it a
pair can hold two wrong answers whose margin comes from the format or RM terms alone, and
MPO's SFT term then imitates a wrong answer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from r1v2_jax.data.image import TilingConfig, preprocess_images
from r1v2_jax.data.prompts import PromptConfig, completion_of, encode_prompt
from r1v2_jax.data.records import PreferenceRecord, RecordRules, load_preference_records
from r1v2_jax.data.tokenizer import Tokenizer
from r1v2_jax.rl.examples import PromptExample
from r1v2_jax.rl.rollout import Sample, SamplingOptions, rollout


@dataclasses.dataclass(frozen=True, eq=False)  # arrays inside: compare fields explicitly
class PreferencePair:
    """One (prompt, chosen, rejected) triple as token ids; completions end with the stop
    token when the response ended normally."""

    example: PromptExample
    chosen_ids: np.ndarray  # int32 [n_c]
    rejected_ids: np.ndarray  # int32 [n_r]
    chosen_score: float = float("nan")
    rejected_score: float = float("nan")
    chosen_hallucinated: bool = False
    rejected_hallucinated: bool = False

    @property
    def margin(self) -> float:
        return self.chosen_score - self.rejected_score


def pair_seq_len(pairs: Sequence[PreferencePair], multiple: int = 16) -> int:
    """Sequence length (a multiple of `multiple`) that fits prompt + the longer side."""
    longest = max(len(p.example.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids))
                  for p in pairs)
    return -(-longest // multiple) * multiple


# ----------------------------------------------------------------------------- records
def pairs_from_records(records: Sequence[PreferenceRecord], tokenizer: Tokenizer,
                       tiling: TilingConfig, prompt: PromptConfig,
                       uid_offset: int = 0) -> list[PreferencePair]:
    """Tokenises validated preference records (images tiled, prompts encoded)."""
    pairs = []
    for i, r in enumerate(records):
        images = preprocess_images(r.images, tiling)
        prompt_ids = np.asarray(encode_prompt(tokenizer, r.prompt, images.num_tiles, prompt),
                                np.int32)
        ids = [np.asarray(tokenizer.encode(completion_of(text, prompt)) + [tokenizer.eos_id],
                          np.int32) for text in (r.chosen, r.rejected)]
        example = PromptExample(uid_offset + i, prompt_ids, images.pixel_values, r.prompt, "",
                                "")  # `meta` is not a synthetic scene
        score = lambda s: float("nan") if s is None else float(s)  # noqa: E731
        pairs.append(PreferencePair(example, ids[0], ids[1], score(r.chosen_score),
                                    score(r.rejected_score)))
    return pairs


def load_preference_pairs(path: str, tokenizer: Tokenizer, tiling: TilingConfig,
                          prompt: PromptConfig, *, max_prompt_tokens: int | None = None,
                          max_completion_tokens: int | None = None,
                          on_invalid: str = "error") -> list[PreferencePair]:
    """JSONL preference records -> pairs; every record is validated first (file:line errors)."""
    rules = RecordRules(tiling=tiling, prompt=prompt, max_prompt_tokens=max_prompt_tokens,
                        max_completion_tokens=max_completion_tokens, on_invalid=on_invalid)
    loaded = load_preference_records(path, rules, tokenizer)
    if not loaded.records:
        raise ValueError(f"{path}: no valid preference records (skipped: {loaded.skipped})")
    return pairs_from_records(loaded.records, tokenizer, tiling, prompt)


# ----------------------------------------------------------------------------- scores
def hybrid_reward_range(reward_cfg) -> tuple[float, float]:
    """[min, max] of r = w_acc*acc + w_rm*rm + w_fmt*fmt (acc, fmt in {0, 1}; the RM term
    clipped to [-tau, tau]). An unclipped RM term is unbounded: set mpo.score_range."""
    lo = hi = 0.0
    for w in (float(reward_cfg.w_acc), float(reward_cfg.w_fmt)):
        lo, hi = lo + min(w, 0.0), hi + max(w, 0.0)
    w_rm = float(reward_cfg.w_rm)
    if w_rm != 0.0:
        tau = reward_cfg.rm_clip_tau
        if tau is None:
            raise ValueError("reward.rm_clip_tau is None (unbounded RM term): set "
                             "mpo.score_range = (min, max) to scale scores for the threshold")
        lo, hi = lo - abs(w_rm) * float(tau), hi + abs(w_rm) * float(tau)
    if hi <= lo:
        raise ValueError(f"hybrid reward range [{lo}, {hi}] is empty: check reward.w_*")
    return lo, hi


def scale_scores(rewards: np.ndarray, score_range: tuple[float, float],
                 scale: float = 100.0) -> np.ndarray:
    """Linear map of `score_range` onto [0, scale] (float64)."""
    lo, hi = (float(x) for x in score_range)
    if not hi > lo:
        raise ValueError(f"score_range must be (min, max) with max > min, got {score_range}")
    return (np.asarray(rewards, np.float64) - lo) * (float(scale) / (hi - lo))


def best_vs_worst(scores: Sequence[float], threshold: float,
                  completions: Sequence[np.ndarray] | None = None) -> tuple[int, int] | None:
    """(chosen index, rejected index) of one group, or None (see the module docstring)."""
    s = np.asarray(scores, np.float64)
    if s.size < 2:
        return None
    best, worst = int(np.argmax(s)), int(np.argmin(s))
    margin = s[best] - s[worst]
    if not (margin > 0.0 and margin >= threshold):
        return None
    if completions is not None and np.array_equal(completions[best], completions[worst]):
        return None
    return best, worst


def threshold_report(group_scores: Sequence[Sequence[float]],
                     thresholds: Sequence[float]) -> dict[str, int]:
    """How many groups each threshold keeps: {"pairs_at_<t>": count}."""
    return {f"pairs_at_{t:g}": sum(best_vs_worst(s, float(t)) is not None for s in group_scores)
            for t in thresholds}


@dataclasses.dataclass(frozen=True)
class PairStats:
    groups: int
    pairs: int
    all_equal_groups: int
    no_correct_chosen: int  # groups dropped by require_correct_chosen
    by_threshold: dict[str, int]
    sampled_reward: float  # mean raw hybrid reward of every sample
    sampled_accuracy: float
    sampled_format_rate: float
    sampled_hallucination_rate: float  # among samples whose image content is known
    chosen_score: float  # means over kept pairs (0-100 scale); nan when none
    rejected_score: float
    chosen_hallucination_rate: float
    rejected_hallucination_rate: float

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(d.pop("by_threshold"))
        return d


def _mean(xs) -> float:
    return float(np.mean(xs)) if len(xs) else float("nan")


def _correct_best_vs_worst(group: Sequence[Sample], scores: np.ndarray,
                           threshold: float) -> tuple[int, int] | None:
    """best_vs_worst with the chosen side restricted to correct samples (accuracy >= 1)."""
    correct = [i for i, s in enumerate(group) if s.accuracy >= 1.0]
    if not correct:
        return None
    best = correct[int(np.argmax(scores[correct]))]
    worst = int(np.argmin(scores))
    margin = scores[best] - scores[worst]
    if not (margin > 0.0 and margin >= threshold):
        return None
    if np.array_equal(group[best].completion_ids, group[worst].completion_ids):
        return None
    return best, worst


def pairs_from_groups(groups: Sequence[Sequence[Sample]], score_range: tuple[float, float], *,
                      threshold: float, report_thresholds: Sequence[float] = (),
                      scale: float = 100.0, require_correct_chosen: bool = True,
                      ) -> tuple[list[PreferencePair], PairStats]:
    """Best-vs-worst pairs of scored rollout groups, with the statistics of the round.
    require_correct_chosen: see the module docstring; `no_correct_chosen` counts the groups
    that would have paired on score alone but were dropped for it."""
    pairs, group_scores, dropped = [], [], 0
    for group in groups:
        scores = scale_scores([s.reward for s in group], score_range, scale)
        group_scores.append(scores)
        picked = best_vs_worst(scores, threshold, [s.completion_ids for s in group])
        if require_correct_chosen:
            by_score = picked
            picked = _correct_best_vs_worst(group, scores, threshold)
            dropped += by_score is not None and picked is None
        if picked is None:
            continue
        c, r = group[picked[0]], group[picked[1]]
        pairs.append(PreferencePair(c.example, c.completion_ids, r.completion_ids,
                                    float(scores[picked[0]]), float(scores[picked[1]]),
                                    c.hallucinated, r.hallucinated))
    flat = [s for g in groups for s in g]
    known = [s for s in flat if s.example.scene is not None]
    known_pairs = [p for p in pairs if p.example.scene is not None]
    stats = PairStats(
        groups=len(groups), pairs=len(pairs),
        all_equal_groups=sum(bool(np.all(s == s[0])) for s in group_scores if len(s)),
        no_correct_chosen=int(dropped),
        by_threshold=threshold_report(group_scores, report_thresholds),
        sampled_reward=_mean([s.reward for s in flat]),
        sampled_accuracy=_mean([s.accuracy for s in flat]),
        sampled_format_rate=_mean([s.format for s in flat]),
        sampled_hallucination_rate=_mean([float(s.hallucinated) for s in known]),
        chosen_score=_mean([p.chosen_score for p in pairs]),
        rejected_score=_mean([p.rejected_score for p in pairs]),
        chosen_hallucination_rate=_mean([float(p.chosen_hallucinated) for p in known_pairs]),
        rejected_hallucination_rate=_mean([float(p.rejected_hallucinated) for p in known_pairs]))
    return pairs, stats


def sample_pairs(config, params, examples: Sequence[PromptExample], options: SamplingOptions,
                 *, tokenizer: Tokenizer, prompt: PromptConfig, seed: int, policy_version: int,
                 score: Callable[..., dict[str, Any]], score_range: tuple[float, float],
                 threshold: float, report_thresholds: Sequence[float] = (),
                 scale: float = 100.0, require_correct_chosen: bool = True,
                 ) -> tuple[list[PreferencePair], PairStats]:
    """Sample `options.num_samples` responses per prompt with the current policy, score
    them with `score` (the hybrid reward, `rl/scoring.make_scorer`), pair best vs worst."""
    groups = rollout(config, params, examples, options, tokenizer=tokenizer, prompt=prompt,
                     seed=seed, policy_version=policy_version, score=score)
    return pairs_from_groups(groups, score_range, threshold=threshold,
                             report_thresholds=report_thresholds, scale=scale,
                             require_correct_chosen=require_correct_chosen)
