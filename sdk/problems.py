"""``Problem``: one reason an adapter file or config does not fit, as the registry reports it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Problem:
    """The tensor concerned (if any), what was expected, what was found, and a message."""

    tensor: str | None
    expected: str | None
    found: str | None
    message: str

    def to_dict(self) -> dict[str, str | None]:
        """The JSON form: ``{tensor, expected, found, message}``."""
        return asdict(self)


#: Most problems reported about one file: a hostile file can have millions.
MAX_PROBLEMS = 100


class ProblemList(list[Problem]):
    """A list of problems that keeps the first ``limit`` and counts the rest (so collecting them
    costs bounded memory); :meth:`finish` gives the list to report."""

    def __init__(self, limit: int = MAX_PROBLEMS) -> None:
        super().__init__()
        self.limit = limit
        self.dropped = 0

    def append(self, problem: Problem) -> None:
        if len(self) < self.limit:
            super().append(problem)
        else:
            self.dropped += 1

    def extend(self, problems: Iterable[Problem]) -> None:
        for p in problems:
            self.append(p)

    def __iadd__(self, problems: Iterable[Problem]) -> ProblemList:  # type: ignore[override]
        self.extend(problems)
        return self

    def finish(self) -> list[Problem]:
        """The problems kept, then one saying how many more were found, if any."""
        kept = list(self)
        if self.dropped:
            kept.append(Problem(None, f"at most {self.limit} problems reported", f"{len(self) + self.dropped} problems",
                                f"... and {self.dropped} more problems (only the first {self.limit} are listed)"))
        return kept


def capped(problems: Iterable[Problem], limit: int = MAX_PROBLEMS) -> list[Problem]:
    """At most ``limit`` of ``problems``, then one saying how many more there were."""
    out = ProblemList(limit)
    out.extend(problems)
    return out.finish()
