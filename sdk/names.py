"""The registry's grammar for names and references, shared by the service and the client.

``namespace/name``, ``namespace/name@ref`` where a ref is a version number, a commit (40 hex
digits) or an alias. The service refuses names that break it (400); the client refuses them before
it sends a request, and refuses a registry answer that breaks it before the value reaches a path.

Every compiled pattern matches the whole string (``\\A...\\Z``): Python's ``$`` also matches before
a final newline, so ``"alice\\n"`` would pass. The ``*_PATTERN`` strings are the same rules for JSON
Schema (OpenAPI), whose ``$`` is the very end.
"""

from __future__ import annotations

import re

__all__ = [
    "ALIAS",
    "ALIAS_PATTERN",
    "COMMIT",
    "MAX_FILENAME_CHARS",
    "NAME_PART",
    "NAME_PART_PATTERN",
    "SHA256",
    "VERSION",
    "alias_problem",
    "filename_problem",
    "name_problem",
    "part_problem",
    "ref_problem",
    "shown",
]

NAME_PART_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$"
"""A namespace or a name: letters, digits, ``_ . -``, starting with a letter or digit, at most 96
(as a JSON Schema / OpenAPI pattern, where ``$`` is the very end; Python code uses :data:`NAME_PART`)."""
ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$"
"""An alias: starts with a letter (so it is never a version number), at most 64 characters (JSON Schema form)."""


def _whole(pattern: str) -> re.Pattern[str]:
    """A ``^...$`` pattern compiled to match the whole string (``\\A...\\Z``)."""
    return re.compile(r"\A" + pattern.removeprefix("^").removesuffix("$") + r"\Z")


NAME_PART = _whole(NAME_PART_PATTERN)
ALIAS = _whole(ALIAS_PATTERN)
COMMIT = re.compile(r"\A[0-9a-f]{40}\Z")
"""A version's commit id: 40 lowercase hex digits."""
SHA256 = re.compile(r"\A[0-9a-f]{64}\Z")
"""A file's sha256: 64 lowercase hex digits."""
VERSION = re.compile(r"\A[0-9]{1,18}\Z")
"""A version number: ASCII digits only (``str.isdigit`` also takes ``"²"``), small enough for 64 bits."""


def shown(value: object, limit: int = 100) -> str:
    """``repr(value)`` cut to about ``limit`` characters: safe to print (control characters come out
    escaped) and short, whatever the value."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return text[: limit - 4] + "...'" if isinstance(value, str) else text[:limit] + "..."


def part_problem(value: object, what: str) -> str | None:
    """Why ``value`` is no valid namespace or name (``what`` says which), or None."""
    if not isinstance(value, str) or not NAME_PART.match(value) or ".." in value:
        return f"invalid {what} {shown(value)}: use letters, digits, '_', '.', '-' (max 96), no '..'"
    return None


def name_problem(value: object, what: str = "name") -> str | None:
    """Why ``value`` is no ``namespace/name`` (``what`` names the second part), or None."""
    ns, sep, rest = value.partition("/") if isinstance(value, str) else ("", "", "")
    if not sep:
        return f"{what}s look like 'namespace/name', got {shown(value)}"
    return part_problem(ns, "namespace") or part_problem(rest, what)


def alias_problem(value: object) -> str | None:
    """Why ``value`` is no valid alias, or None."""
    if not isinstance(value, str) or not ALIAS.match(value) or COMMIT.match(value):
        return f"invalid alias {shown(value)}: start with a letter; letters, digits, '_', '.', '-' (max 64)"
    return None


def ref_problem(value: object) -> str | None:
    """Why ``value`` is no version number, commit or alias, or None."""
    if isinstance(value, str) and (VERSION.match(value) or COMMIT.match(value) or ALIAS.match(value)):
        return None
    return (f"invalid version reference {shown(value)}: a version number, a 40-hex-digit commit, or an alias "
            "(a letter, then letters, digits, '_', '.', '-')")


MAX_FILENAME_CHARS = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def filename_problem(value: object) -> str | None:
    """Why ``value`` is no plain file name (one path segment, no ``..``, not hidden, no control
    characters, at most 255 characters), or None."""
    if (not isinstance(value, str) or not value or len(value) > MAX_FILENAME_CHARS or "/" in value
            or "\\" in value or value.startswith(".") or ".." in value or _CONTROL.search(value)):
        return (f"invalid filename {shown(value)}: plain file names only (no '/', '\\\\', '..', leading '.', "
                f"control characters; at most {MAX_FILENAME_CHARS} characters)")
    return None
