"""Final-answer extraction and rule-based answer checking (the r_rule term of R1V2 eq. 7).

Reading an answer as its type (numbers, option letters, math-verify) lives in
`r1v2_jax.data.answer_forms`, shared with load-time gold validation.
Extraction (training.md "Hybrid reward"): the answer region is the text after the last
`</think>`; within it the final answer is the content of the last balanced `\\boxed{...}`
(or `\\fbox{...}`), else (multiple choice only) an option letter, else the last non-empty
line.  Comparison by answer_type:
  math:   symbolic equivalence with math-verify (`parse` + `verify`, per gold/pred pair).
  number: |pred - gold| <= max(rel_tol * max(|pred|, |gold|), abs_tol) (math.isclose).
  choice: option letters, "B", "(B)", "B.", "The answer is B", "\\boxed{\\text{B}}".
  text:   normalised string equality (\\text{} unwrapped, case-folded, spaces collapsed).

`check_answer` runs in the calling process with only math-verify's own signal-based soft
timeouts, which cannot interrupt C-level work (a huge integer power);
`r1v2_jax.rl.rewards.AnswerChecker` runs it in worker processes under a hard limit.
"""

from __future__ import annotations

import cmath
import math
from dataclasses import dataclass
from itertools import product

from r1v2_jax.data.answer_forms import (ANSWER_TYPES, CHOICE_LETTERS, InvalidGoldError,  # noqa: F401
                                        find_choice_letter, normalise_text, parse_answer, parse_gold,
                                        to_number)

THINK_CLOSE = "</think>"
_BOX_OPENERS = ("\\boxed{", "\\fbox{")


@dataclass(frozen=True)
class AnswerCheckConfig:
    """Every knob of answer extraction and checking.

    check_timeout_s: hard wall-clock limit per check, enforced by killing the worker
      process (`r1v2_jax.rl.rewards.AnswerChecker`).
    batch_timeout_s: hard wall-clock limit per batch of checks (None: none); what is
      unfinished then scores 0 with reason "timeout (batch limit ...)".
    math_verify_timeout_s: math-verify's own signal.alarm limit (whole seconds) for each
      parse / verify call inside the worker; None disables it (the hard limit remains).
    """

    check_timeout_s: float = 5.0
    batch_timeout_s: float | None = 120.0
    math_verify_timeout_s: int | None = 2
    max_answer_chars: int = 1000
    require_think_close: bool = True
    rel_tol: float = 1e-4
    abs_tol: float = 1e-8
    choice_letters: str = CHOICE_LETTERS
    float_rounding: int = 6
    num_workers: int = 1
    start_method: str = "spawn"
    worker_start_timeout_s: float = 120.0
    worker_memory_limit_mb: int | None = 8192

    def __post_init__(self):
        if not self.check_timeout_s > 0:
            raise ValueError(f"AnswerCheckConfig.check_timeout_s must be > 0, got {self.check_timeout_s}")
        if self.batch_timeout_s is not None and not self.batch_timeout_s > 0:
            raise ValueError(f"AnswerCheckConfig.batch_timeout_s must be > 0 or None, got {self.batch_timeout_s}")
        mv = self.math_verify_timeout_s
        if mv is not None and (not isinstance(mv, int) or mv < 1):
            raise ValueError(f"AnswerCheckConfig.math_verify_timeout_s must be an int >= 1 or None, got {mv!r}")
        if self.max_answer_chars < 1 or self.num_workers < 1:
            raise ValueError("AnswerCheckConfig.max_answer_chars and num_workers must be >= 1")
        if not self.choice_letters or not self.choice_letters.isupper():
            raise ValueError(
                f"AnswerCheckConfig.choice_letters must be upper-case letters, got {self.choice_letters!r}")


@dataclass(frozen=True)
class AnswerCheck:
    """Outcome of one check; `reason` says why (logged for every zero)."""

    correct: bool
    reason: str
    extracted: str | None = None

    @property
    def score(self) -> float:
        return 1.0 if self.correct else 0.0


def answer_region(response: str, require_think_close: bool) -> str | None:
    """Text after the last `</think>`; the whole response if tags are optional; else None."""
    cut = response.rfind(THINK_CLOSE)
    if cut < 0:
        return None if require_think_close else response
    return response[cut + len(THINK_CLOSE):]


def last_boxed(text: str) -> str | None:
    """Content of the \\boxed{...} that closes last; braces balanced, `\\{` `\\}` ignored.

    One linear pass with a brace stack, so a long run of unclosed boxes stays O(n).
    """
    stack: list[int | None] = []  # per open brace: content start if it opened a box
    best: tuple[int, int] | None = None
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            opener = next((o for o in _BOX_OPENERS if text.startswith(o, i)), None)
            if opener is not None:
                stack.append(i + len(opener))
                i += len(opener)
                continue
            i += 2  # skip the escaped character (`\{`, `\}`, `\\`)
            continue
        if ch == "{":
            stack.append(None)
        elif ch == "}" and stack:
            start = stack.pop()
            if start is not None:
                best = (start, i)
        i += 1
    return None if best is None else text[best[0]:best[1]]


def extract_final_answer(region: str, answer_type: str, letters: str) -> tuple[str, str] | None:
    """(answer, source): \\boxed content first, else an option letter (choice only), else
    the last non-empty line; source is "boxed" | "letter" | "last_line"; None if empty."""
    boxed = last_boxed(region)
    if boxed is not None and boxed.strip():
        return boxed.strip(), "boxed"
    if answer_type == "choice":
        letter = find_choice_letter(region, letters)
        if letter is not None:
            return letter, "letter"
    lines = [ln.strip() for ln in region.splitlines() if ln.strip()]
    return (lines[-1], "last_line") if lines else None


def _compare_math(answer: str, source: str, gold: str, cfg: AnswerCheckConfig) -> tuple[bool, str]:
    from math_verify import verify
    from math_verify.errors import TimeoutException

    gold_parsed = parse_gold(gold, "math", letters=cfg.choice_letters, timeout_s=cfg.math_verify_timeout_s)
    pred_parsed = parse_answer(answer, source, cfg.math_verify_timeout_s)
    if not pred_parsed:
        return False, "unparsable_answer"
    timed_out = False
    for g, p in product(gold_parsed, pred_parsed):  # one pair at a time: an error in one
        try:  # pair must not hide a match in another
            if verify(g, p, float_rounding=cfg.float_rounding, timeout_seconds=cfg.math_verify_timeout_s,
                      raise_on_error=True):
                return True, "match"
        except TimeoutException:
            timed_out = True
        except Exception:  # sympy raises many kinds on odd pairs: that pair is not a match
            pass
    return False, "timeout (math-verify)" if timed_out else "mismatch"


def _compare(answer: str, source: str, gold: str, answer_type: str, cfg: AnswerCheckConfig) -> tuple[bool, str]:
    if answer_type == "math":
        return _compare_math(answer, source, gold, cfg)
    if answer_type == "number":
        gold_value = parse_gold(gold, "number", letters=cfg.choice_letters, timeout_s=cfg.math_verify_timeout_s)
        value = to_number(answer, source, cfg.math_verify_timeout_s)
        if value is None or not cmath.isfinite(value):
            return False, "not_a_finite_number"
        ok = math.isclose(value.real, gold_value.real, rel_tol=cfg.rel_tol, abs_tol=cfg.abs_tol) and math.isclose(
            value.imag, gold_value.imag, rel_tol=cfg.rel_tol, abs_tol=cfg.abs_tol)
        return ok, "match" if ok else "mismatch"
    if answer_type == "choice":
        gold_letter = parse_gold(gold, "choice", letters=cfg.choice_letters)
        letter = find_choice_letter(answer, cfg.choice_letters)
        if letter is None:
            return False, "no_option_letter"
        return letter == gold_letter, "match" if letter == gold_letter else "mismatch"
    ok = normalise_text(answer) == normalise_text(gold)
    return ok, "match" if ok else "mismatch"


def validate_gold(gold: str, answer_type: str, where: str = "") -> None:
    """Cheap structural checks done before any worker sees the sample."""
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"{where}answer_type must be one of {ANSWER_TYPES}, got {answer_type!r}")
    if not isinstance(gold, str) or not gold.strip():
        raise ValueError(f"{where}gold answer must be a non-empty string, got {gold!r}")


def check_answer(response: str, gold: str, answer_type: str, cfg: AnswerCheckConfig) -> AnswerCheck:
    """Extract the final answer of `response` and compare it with `gold` (no hard limit).

    Raises InvalidGoldError / ValueError for a bad reference or answer_type (data errors);
    every property of the response itself ends in an AnswerCheck with a reason.
    """
    validate_gold(gold, answer_type)
    region = answer_region(response, cfg.require_think_close)
    if region is None:
        return AnswerCheck(False, "no_think_close")
    extracted = extract_final_answer(region, answer_type, cfg.choice_letters)
    if extracted is None:
        return AnswerCheck(False, "empty_answer")
    answer, source = extracted
    if len(answer) > cfg.max_answer_chars:
        return AnswerCheck(False, f"answer_too_long ({len(answer)} > {cfg.max_answer_chars} chars)")
    from math_verify.errors import TimeoutException

    try:
        ok, reason = _compare(answer, source, gold, answer_type, cfg)
    except InvalidGoldError:
        raise
    except TimeoutException:
        return AnswerCheck(False, "timeout (math-verify)", answer)
    except Exception as e:  # a pathological answer (RecursionError, MemoryError...): zero, with the cause
        return AnswerCheck(False, f"error ({type(e).__name__})", answer)
    return AnswerCheck(ok, reason, answer)
