"""The one error type of the converters: a problem with the input, named precisely."""

from __future__ import annotations


class ConversionError(ValueError):
    """Bad checkpoint or config. The message names every offending tensor/field and file."""

    def __init__(self, problems: str | list[str], *, limit: int = 40):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        shown = self.problems[:limit]
        if len(self.problems) > limit:
            shown.append(f"... and {len(self.problems) - limit} more problem(s)")
        super().__init__(shown[0] if len(shown) == 1 else
                         f"{len(self.problems)} problems:\n  " + "\n  ".join(shown))
