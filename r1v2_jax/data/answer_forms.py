"""Reading an answer string as its answer_type: a number, an option letter, a math
expression (math-verify) or normalised text.

One parser for both sides of an answer check: `r1v2_jax.rl.answers` reads the model's
answers with it, and `r1v2_jax.data.records` reads every gold answer with `parse_gold` at
load time, so a reference that cannot be read ("three" as a number, "42" as a choice,
`\\frac{` as math) is a record error naming file:line, never a crash mid-training.
"""

from __future__ import annotations

import cmath
import re

ANSWER_TYPES = ("math", "number", "choice", "text")
CHOICE_LETTERS = "ABCDEFGHIJ"
_WHITESPACE_RUN = re.compile(r"\s+")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf)\s*\{([^{}]*)\}")


class InvalidGoldError(ValueError):
    """The reference answer itself cannot be interpreted: a data error, never a score."""


def unwrap_text(s: str) -> str:
    return _TEXT_WRAPPER.sub(r"\1", s).replace("$", "").replace("**", "").strip()


def normalise_text(s: str) -> str:
    return " ".join(unwrap_text(s).casefold().split()).rstrip(".")


def find_choice_letter(text: str, letters: str) -> str | None:
    """An option letter: the whole text ("B", "(B)", "B."), "answer is (B)", or a
    last line that starts with an option ("B. 42")."""
    cls = f"[{re.escape(letters)}]"
    # whitespace runs -> one character first, so every pattern below uses bounded `\s?`:
    # adjacent `\s*` backtrack polynomially on a long blank run (seconds at 250 spaces)
    clean = _WHITESPACE_RUN.sub(lambda m: "\n" if "\n" in m.group() else " ", unwrap_text(text))
    whole = re.fullmatch(rf"\(? ?({cls}) ?\)? ?[.:)]?", clean)
    if whole:
        return whole.group(1)
    said = re.findall(rf"(?i:answer|option|choice)\s?(?i:is)?\s?[:：]?\s?(?i:option)?\s?\(?({cls})\)?(?![A-Za-z0-9])",
                      clean)
    if said:
        return said[-1]
    lines = [ln.strip() for ln in clean.splitlines() if ln.strip()]
    if lines:
        lead = re.match(rf"\(?({cls})[.):]\s", lines[-1] + " ")
        if lead:
            return lead.group(1)
    return None


def math_parse(text: str, timeout_s: int | None) -> list:
    """math-verify `parse` (raising on errors); timeout_s: its signal.alarm limit."""
    from math_verify import parse  # imported lazily: sympy is slow to import

    return parse(text, parsing_timeout=timeout_s, raise_on_error=True)


def parse_answer(answer: str, source: str, timeout_s: int | None) -> list:
    """math-verify parse of an extracted answer.  Boxed content is re-boxed (math-verify's
    own highest-priority form; bare "2^{10}" outside math mode parses as 2).  A last line
    is free text for math-verify to search; bare LaTeX ("\\dfrac{1}{2}") is only found
    inside math delimiters, so a line where nothing is found is retried inside `$...$`."""
    if source == "boxed":
        return math_parse(f"\\boxed{{{answer}}}", timeout_s)
    return math_parse(answer, timeout_s) or math_parse(f"${answer}$", timeout_s)


def to_number(s: str, source: str, timeout_s: int | None) -> complex | None:
    """Plain decimal first (commas, %, $ stripped); else a math-verify numeric expression."""
    plain = unwrap_text(s).replace(",", "").replace("\\%", "").replace("%", "").replace("\\!", "")
    try:
        return complex(float(plain))
    except ValueError:
        pass
    from math_verify.utils import timeout

    numeric = [e for e in parse_answer(s, source, timeout_s)
               if not isinstance(e, str) and getattr(e, "is_number", False)]
    if not numeric:
        return None
    # not nested inside parse's own alarm: signal.alarm timers do not nest
    return timeout(timeout_s)(lambda: complex(numeric[0].evalf(30)))()


def parse_gold(gold: str, answer_type: str, *, letters: str = CHOICE_LETTERS,
               timeout_s: int | None = 2):
    """The gold answer read for its type: math -> math-verify's parse list, number ->
    complex, choice -> the letter, text -> normalised text. Raises InvalidGoldError
    (ValueError for an unknown answer_type or an empty gold); math-verify's own errors and
    timeouts propagate (the answer checker scores them 0, as for any pathological pair)."""
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"answer_type must be one of {ANSWER_TYPES}, got {answer_type!r}")
    if not isinstance(gold, str) or not gold.strip():
        raise ValueError(f"gold answer must be a non-empty string, got {gold!r}")
    if answer_type == "math":
        parsed = math_parse(f"\\boxed{{{gold.strip().strip('$')}}}", timeout_s)
        # math-verify appends the raw string to what it parsed; a list of strings only
        # means it found no expression (`\frac{` parses to ["{\frac{}"])
        if not any(not isinstance(e, str) for e in parsed):
            raise InvalidGoldError(f"math gold answer {gold[:80]!r} cannot be parsed by math-verify")
        return parsed
    if answer_type == "number":
        value = to_number(gold, "boxed", timeout_s)
        if value is None or not cmath.isfinite(value):
            raise InvalidGoldError(f"number gold answer {gold[:80]!r} is not a number (or not finite)")
        return value
    if answer_type == "choice":
        letter = find_choice_letter(gold, letters)
        if letter is None:
            raise InvalidGoldError(f"choice gold answer {gold!r} is not one of the letters {letters!r}")
        return letter
    return normalise_text(gold)
