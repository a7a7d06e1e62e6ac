"""``Problem``: one reason an adapter file or config does not fit, as the registry reports it."""

from __future__ import annotations

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
