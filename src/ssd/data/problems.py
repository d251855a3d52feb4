"""What is wrong in a dataset: every problem names its file, and a dataset decides once what to do about them.

A loader reads annotations and hands each finding to a `ProblemLog`. By default a bad box is dropped and a bad
picture skipped, and the log warns once with the counts; with `strict=True` the dataset refuses to build and
lists what it found, so a run stops before training starts instead of an hour in.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass

from ssd.errors import DatasetError

# What the loader did about a problem.
DROPPED_BOX = "dropped box"
CLIPPED_BOX = "clipped box"
SKIPPED_PICTURE = "skipped picture"
SKIPPED_ANNOTATION = "skipped annotation"
SIZE_CORRECTED = "size corrected"  # an annotation's picture size, replaced by the picture's own
WARNED = "warning"  # kept as it is, but worth a look

_PLURAL = {
    DROPPED_BOX: "dropped boxes",
    CLIPPED_BOX: "clipped boxes",
    SKIPPED_PICTURE: "skipped pictures",
    SKIPPED_ANNOTATION: "skipped annotations",
    SIZE_CORRECTED: "sizes corrected",
    WARNED: "warnings",
}

# How many problems an error or a warning lists before it says "and N more".
_LISTED = 10


class DataWarning(UserWarning):
    """A dataset had problems that were worked around (boxes dropped, pictures skipped)."""


@dataclass(frozen=True)
class Problem:
    file: str
    message: str
    action: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message} ({self.action})"


class ProblemLog:
    """Collects the problems found while a dataset is read."""

    def __init__(self, source: str, strict: bool = False):
        self.source = source
        self.strict = strict
        self.problems: list[Problem] = []

    def add(self, file: str, message: str, action: str) -> None:
        self.problems.append(Problem(str(file), message, action))

    def __len__(self) -> int:
        return len(self.problems)

    def counts(self) -> Counter:
        return Counter(problem.action for problem in self.problems)

    def summary(self) -> str:
        counts = self.counts()
        parts = [
            f"{count} {action if count == 1 else _PLURAL[action]}" for action, count in sorted(counts.items())
        ]
        return ", ".join(parts)

    def listing(self, limit: int = _LISTED) -> str:
        lines = [f"  {problem}" for problem in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        return "\n".join(lines)

    def finish(self) -> None:
        """Raise (strict) or warn once (default) about everything found; silent when nothing was."""
        if not self.problems:
            return
        if self.strict:
            raise DatasetError(
                f"{self.source}: {len(self.problems)} problem(s) found and --strict is set:\n{self.listing()}"
            )
        warnings.warn(
            f"{self.source}: {self.summary()} because of problems in the data "
            f"(`ssd data check` lists them all):\n{self.listing(limit=3)}",
            DataWarning,
            stacklevel=3,
        )
